# SPDX-License-Identifier: Apache-2.0
"""Licence and provenance of the repository: the LICENSE file pyproject.toml declares, an SPDX
identifier in every source file (scripts/add_spdx.py inserts it), and that script's rules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _add_spdx() -> ModuleType:
    spec = importlib.util.spec_from_file_location("add_spdx", ROOT / "scripts" / "add_spdx.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["add_spdx"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_license_file_is_apache_2_as_declared():
    text = (ROOT / "LICENSE").read_text("utf-8")
    assert "Apache License" in text.splitlines()[1]
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text("utf-8")


def test_every_source_file_has_the_spdx_identifier():
    spdx = _add_spdx()
    files = spdx.source_files(ROOT)
    # The selection itself: every kind of source the repository has is covered.
    for p in ("csrc/CMakeLists.txt", "csrc/include/fwassist/fwassist.h", "csrc/kernels/variants.def",
              "sdk/fwassist/__init__.py", "tests/run_all.sh", ".ci/run", "pyproject.toml"):
        assert p in files, p
    assert not any(p.endswith((".json", ".md", ".fwa", ".npy")) for p in files)
    assert "tests/golden/tiny-coder-prompt.c" not in files  # data: the goldens' prompt
    missing = spdx.missing(ROOT)
    assert not missing, (f"{len(missing)} source file(s) without '{spdx.SPDX}' (run "
                         f"python scripts/add_spdx.py): {missing[:10]}")


def test_add_spdx_respects_shebang_and_encoding_and_is_idempotent(tmp_path):
    spdx = _add_spdx()
    files = {
        "a.sh": "#!/bin/sh\necho hi\n",
        "b.py": "#!/usr/bin/env python3\n# -*- coding: utf-8 -*-\n\"\"\"Doc.\"\"\"\n",
        "c.py": "# vim: set fileencoding=latin-1 :\nx = 1",
        "d.cpp": "#include <x>\r\nint f();\r\n",
        "e.h": "#pragma once\n",
        "CMakeLists.txt": "project(x)\n",
        "notes.txt": "not source\n",
        "empty.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode("utf-8"))
    assert spdx.main([str(tmp_path)]) == 0
    got = {name: (tmp_path / name).read_bytes().decode("utf-8") for name in files}
    tag = spdx.SPDX
    assert got["a.sh"] == f"#!/bin/sh\n# {tag}\necho hi\n"
    assert got["b.py"].splitlines()[:3] == ["#!/usr/bin/env python3", "# -*- coding: utf-8 -*-",
                                            f"# {tag}"]
    assert got["c.py"] == f"# vim: set fileencoding=latin-1 :\n# {tag}\nx = 1\n"
    assert got["d.cpp"] == f"// {tag}\r\n#include <x>\r\nint f();\r\n"
    assert got["e.h"] == f"/* {tag} */\n#pragma once\n"
    assert got["CMakeLists.txt"] == f"# {tag}\nproject(x)\n"
    assert got["notes.txt"] == "not source\n"
    assert got["empty.py"] == f"# {tag}\n"
    assert spdx.missing(tmp_path) == []
    # A second run changes nothing.
    assert spdx.main([str(tmp_path)]) == 0
    assert {name: (tmp_path / name).read_bytes().decode("utf-8") for name in files} == got
    compile(got["b.py"], "b.py", "exec")


def test_add_spdx_check_lists_what_is_missing(tmp_path, capsys):
    spdx = _add_spdx()
    (tmp_path / "x.py").write_text("x = 1\n")
    assert spdx.main(["--check", str(tmp_path)]) == 1
    assert "x.py" in capsys.readouterr().out
    assert (tmp_path / "x.py").read_text() == "x = 1\n"
