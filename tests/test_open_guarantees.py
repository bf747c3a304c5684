# SPDX-License-Identifier: Apache-2.0
"""What opening an artifact guarantees (docs/runtime.md, "Verification guarantees per open
mode"): one pin parser where "" is an error, only regular files with NUL-free paths, the
protection in force reported (and required with strict=True), private copies that later writes
cannot reach, and a file truncated under its mapping turned into an error instead of SIGBUS.
Every mode called protected either refuses the overwrite or keeps its tokens."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fwassist
from fwassist import _core
from fwassist.loader import ArtifactError, load_artifact
from fwassist.models import TINY_CODER_PIN, tiny_coder_path
from fwassist.pin import check_path, parse_pin

PROMPT = [1, 2, 3, 4, 5, 6, 7, 8]
GOOD_PIN = "sha256:" + "ab" * 32


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A private, writable copy of the bundled model (tests overwrite and truncate it)."""
    p = tmp_path / "model.fwa"
    shutil.copyfile(tiny_coder_path(), p)
    return p


def data_offset(path: Path) -> int:
    with open(path, "rb") as f:
        header = f.read(128)
    return int.from_bytes(header[24:32], "little")


def overwrite_weights(path: Path) -> None:
    """Overwrites every byte of the data region in place (same size, same inode)."""
    off = data_offset(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(bytes([0x3C]) * (size - off))


def tokens(model: fwassist.Model, n: int = 8) -> list[int]:
    with model.session() as s:
        return s.generate(prompt_ids=PROMPT, max_tokens=n).token_ids


def logits(model: fwassist.Model) -> np.ndarray:
    with model.session() as s:
        return s.logits(PROMPT)


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter; a hang fails the test at the timeout, not forever."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


# -- the pin -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["", " ", "sha256:", "sha256:" + "AB" * 32, "sha256:" + "a" * 63,
                                 GOOD_PIN + "\n", "SHA256:" + "ab" * 32, "md5:" + "ab" * 32])
def test_parse_pin_refuses_malformed_and_empty(bad):
    with pytest.raises(ValueError, match="pin must be 'sha256:'") as e:
        parse_pin(bad)
    assert repr(bad) in str(e.value)


def test_parse_pin_none_is_no_pin_and_types():
    assert parse_pin(None) is None
    assert parse_pin(GOOD_PIN) == GOOD_PIN
    with pytest.raises(TypeError):
        parse_pin(b"sha256:" + b"ab" * 32)  # type: ignore[arg-type]


def test_empty_pin_is_refused_by_every_python_entry_point(model_file):
    raw = model_file.read_bytes()
    with pytest.raises(ValueError, match="empty pin"):
        fwassist.Model.load(model_file, pin="")
    with pytest.raises(ValueError, match="empty pin"):
        load_artifact(model_file, pin="")
    with pytest.raises(ValueError, match="empty pin"):
        load_artifact(raw, pin="")
    # The native layer refuses it too (no Python-side check in between).
    with pytest.raises(ValueError, match="empty pin"):
        _core.NativeModel.load(str(model_file), "")
    for open_fn, arg in ((_core.ArtifactHandle.open_path, str(model_file)),
                         (_core.ArtifactHandle.open_buffer, raw)):
        with pytest.raises(_core.ArtifactFailure) as e:
            open_fn(arg, "")
        assert e.value.args[0] == "invalid_argument"
    # None is no pin; the right pin loads.
    assert fwassist.Model.load(model_file, pin=None).pin == TINY_CODER_PIN
    assert fwassist.Model.load(model_file, pin=TINY_CODER_PIN).pin == TINY_CODER_PIN


def test_wrong_pin_is_a_pin_mismatch(model_file):
    with pytest.raises(ArtifactError) as e:
        fwassist.Model.load(model_file, pin=GOOD_PIN, copy=True)
    assert e.value.status == "pin_mismatch"


# -- the path ----------------------------------------------------------------------------------

def test_nul_in_path_is_refused_not_truncated(model_file):
    # Truncated at the NUL, this path names a valid model: it must not be loaded.
    bad = str(model_file) + "\0.untrusted"
    for call in (lambda: fwassist.Model.load(bad), lambda: load_artifact(bad),
                 lambda: fwassist.Model.load(Path(str(model_file) + "\0x"), copy=True)):
        with pytest.raises(ValueError, match="NUL"):
            call()
    with pytest.raises(ValueError, match="NUL"):
        check_path(os.fsencode(bad))
    with pytest.raises(ValueError, match="NUL"):
        _core.NativeModel.load(bad)
    with pytest.raises(_core.ArtifactFailure) as e:
        _core.ArtifactHandle.open_path(bad)
    assert e.value.args[0] == "invalid_argument" and "NUL" in e.value.args[1]


def test_fifo_fails_fast(tmp_path):
    fifo = tmp_path / "model.fwa"
    os.mkfifo(fifo)
    r = run_python(f"""
        import fwassist
        from fwassist.loader import ArtifactError, load_artifact
        calls = [lambda: fwassist.Model.load({str(fifo)!r}),
                 lambda: fwassist.Model.load({str(fifo)!r}, copy=True),
                 lambda: load_artifact({str(fifo)!r}, lazy=True)]
        for call in calls:
            try:
                call()
            except ArtifactError as e:
                assert e.status == "io_error" and "FIFO" in e.message, e
                print("refused:", e.message)
            else:
                raise SystemExit("a FIFO was opened")
        """, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("refused:") == 3 and "not a regular file" in r.stdout


@pytest.mark.parametrize("path,kind", [("/", "a directory"), ("/dev/null", "a character device")])
def test_non_regular_files_are_refused(path, kind):
    for copy in (False, True):
        with pytest.raises(ArtifactError) as e:
            fwassist.Model.load(path, copy=copy)
        assert e.value.status == "io_error" and kind in e.value.message


# -- protection and strict ---------------------------------------------------------------------

def test_mapped_writable_file_is_unprotected_and_strict_refuses_it(model_file):
    m = fwassist.Model.load(model_file)
    if m.protection != "none":
        pytest.skip(f"the temporary directory is protected here ({m.protection})")
    assert load_artifact(model_file).protection == "none"
    for call in (lambda: fwassist.Model.load(model_file, strict=True),
                 lambda: fwassist.Model.load(model_file, strict=True, lazy=True),
                 lambda: load_artifact(model_file, strict=True)):
        with pytest.raises(ArtifactError) as e:
            call()
        assert e.value.status == "io_error" and "unprotected mapping" in e.value.message
        assert "copy=True" in e.value.message


def test_protection_of_copies_and_buffers(model_file):
    raw = model_file.read_bytes()
    assert fwassist.Model.load(model_file, copy=True).protection == "copy"
    assert fwassist.Model.load(model_file, copy=True, strict=True).protection == "copy"
    assert load_artifact(model_file, copy=True).protection == "copy"
    assert load_artifact(raw).protection == "caller-memory"
    assert load_artifact(raw, copy=True).protection == "copy"


def test_copy_keeps_the_verified_tokens_after_the_file_is_overwritten(model_file):
    reference = tokens(fwassist.Model.load(model_file))
    copied = fwassist.Model.load(model_file, pin=TINY_CODER_PIN, copy=True)
    copied_lazy = fwassist.Model.load(model_file, copy=True, lazy=True)
    mapped = fwassist.Model.load(model_file)
    before = logits(copied)
    overwrite_weights(model_file)
    # The overwrite reaches a plain mapping (which is why "none" is reported)...
    assert not np.array_equal(logits(mapped), before)
    # ...and not the private copies, lazily verified ones included.
    assert tokens(copied) == reference
    assert np.array_equal(logits(copied).view(np.uint32), before.view(np.uint32))
    assert tokens(copied_lazy) == reference
    # The file itself is now refused.
    with pytest.raises(ArtifactError):
        fwassist.Model.load(model_file, copy=True)


def test_copy_of_a_buffer_is_private():
    raw = bytearray(Path(tiny_coder_path()).read_bytes())
    a = load_artifact(raw, copy=True)
    name = next(n for n in a.tensor_names() if a.tensor_info(n)["dtype"] != "packed")
    before = np.array(a.tensor(name), copy=True)
    raw[:] = bytes(len(raw))
    assert np.array_equal(np.asarray(a.tensor(name)), before)


def test_sealed_memfd_is_protected(model_file):
    if not hasattr(os, "memfd_create") or not hasattr(fcntl, "F_ADD_SEALS"):
        pytest.skip("no memfd_create / F_ADD_SEALS here")
    fd = os.memfd_create("fwassist-test", os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, model_file.read_bytes())
        path = f"/proc/self/fd/{fd}"
        assert fwassist.Model.load(path).protection == "none"  # not sealed yet
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
        m = fwassist.Model.load(path, strict=True)
        assert m.protection == "memfd-sealed"
        reference = tokens(m)
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"\x00" * 4096, data_offset(model_file))
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 4096)
        assert tokens(m) == reference
    finally:
        os.close(fd)


def test_immutable_file_is_protected(model_file):
    r = subprocess.run(["chattr", "+i", str(model_file)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"chattr +i is not possible here: {r.stderr.strip()}")
    try:
        m = fwassist.Model.load(model_file, strict=True)
        assert m.protection == "immutable"
        reference = tokens(m)
        with pytest.raises(PermissionError):
            overwrite_weights(model_file)
        with pytest.raises(PermissionError):
            os.truncate(model_file, 4096)
        assert tokens(m) == reference
    finally:
        subprocess.run(["chattr", "-i", str(model_file)], check=True)


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


def test_read_only_file_system_is_protected_and_a_read_only_bind_mount_is_not(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting needs root")
    fs, bind = tmp_path / "fs", tmp_path / "bind"
    fs.mkdir()
    bind.mkdir()
    r = _mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(fs))
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        model = fs / "model.fwa"
        shutil.copyfile(tiny_coder_path(), model)
        # A read-only bind mount: the same file stays writable through the other mount.
        r = _mount("--bind", "-o", "ro", str(fs), str(bind))
        if r.returncode == 0:
            try:
                m = fwassist.Model.load(bind / "model.fwa")
                assert m.protection == "none"
                with pytest.raises(ArtifactError, match="unprotected mapping"):
                    fwassist.Model.load(bind / "model.fwa", strict=True)
                del m
            finally:
                _mount_check_umount(bind)
        # The file system itself read-only: protected.
        r = _mount("-o", "remount,ro", str(fs))
        if r.returncode != 0:
            pytest.skip(f"cannot remount read-only: {r.stderr.strip()}")
        m = fwassist.Model.load(model, strict=True)
        assert m.protection == "read-only-mount"
        reference = tokens(m)
        with pytest.raises(OSError):
            overwrite_weights(model)
        assert tokens(m) == reference
        del m
    finally:
        import gc
        gc.collect()
        _mount_check_umount(fs)


def _mount_check_umount(path: Path) -> None:
    # Lazy: detached even while a failed assertion still holds a mapping of the file.
    subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


# -- truncation while mapped -------------------------------------------------------------------

@pytest.mark.parametrize("lazy", [False, True])
def test_truncated_mapping_is_an_error_not_sigbus(model_file, lazy):
    r = run_python(f"""
        import os
        import fwassist
        from fwassist.loader import ArtifactError
        m = fwassist.Model.load({str(model_file)!r}, lazy={lazy})
        assert m.protection == "none", m.protection
        s = m.session()
        s.generate(prompt_ids={PROMPT}, max_tokens=2)
        s.reset()
        os.truncate({str(model_file)!r}, 4096)
        for step in ("logits", "generate", "logits again"):
            try:
                if step == "generate":
                    s.generate(prompt_ids={PROMPT}, max_tokens=4)
                else:
                    s.logits({PROMPT})
            except ArtifactError as e:
                print(step, "->", e.status, e.message)
            else:
                raise SystemExit(step + ": no error after the truncation")
        # A new session of the same model fails the same way; nothing crashed.
        try:
            m.session().logits([1])
        except ArtifactError as e:
            print("new session ->", e.status)
        else:
            raise SystemExit("new session: no error")
        print("survived")
        """, timeout=120)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "survived" in r.stdout
    if not lazy:
        # Full verification: only the SIGBUS check can notice the lost pages.
        assert r.stdout.count("io_error") == 4 and "SIGBUS" in r.stdout, r.stdout


def test_foreign_sigbus_still_kills():
    """The handler only takes faults inside artifact mappings: any other SIGBUS keeps its
    default action (the process dies by SIGBUS)."""
    r = run_python(f"""
        import faulthandler, mmap, os, tempfile
        import numpy as np
        import fwassist
        faulthandler.disable()
        fwassist.Model.load({str(tiny_coder_path())!r})  # installs the handler
        fd, path = tempfile.mkstemp()
        os.write(fd, b"x" * 8192)
        mm = mmap.mmap(fd, 8192, prot=mmap.PROT_READ)
        a = np.frombuffer(mm, dtype=np.uint8)
        os.ftruncate(fd, 0)
        print(int(a[4096]))
        """, timeout=60)
    assert r.returncode == -7, (r.returncode, r.stdout, r.stderr)  # SIGBUS
