# SPDX-License-Identifier: Apache-2.0
"""License-gated C corpus builder for the tiny C-code model.

Reads a pinned list of PyPI source distributions (``sources.json``: a list of
``{"name", "version", "kind": "pypi-sdist"}``), downloads each sdist into a cache (or uses
archives already present in ``--sdist-dir``), and extracts the hand-written ``*.c``/``*.h``
files that pass a license gate:

* package level: the license from PKG-INFO (``License-Expression``, else ``License``, else
  ``Classifier: License :: ...``) is normalised to an SPDX expression through an explicit
  table and must pass the allowlist (``A OR B`` passes if any alternative does, ``A AND B``
  only if all do). Copyleft, unknown and other non-allowlisted licenses refuse the package.
* file level: an ``SPDX-License-Identifier:`` line in the first 4 KB must itself pass the
  allowlist; without one, a header mentioning (L/A)GPL or the GNU license names refuses the
  file. Generated code, non-UTF-8 files and files outside [256 B, 256 KB] are skipped.

Accepted texts (CRLF normalised to LF) are deduplicated by sha256 (first in sorted order
wins) and split into train/test by file: a file is held out when
``int(sha256[:8], 16) % 100 < test_percent``. Every refusal or skip is counted by reason.

Export-control flag (``crypto_gate.py``): every kept file is scanned for the constants and
structures of cryptographic primitives (AES, SHA-2, ChaCha/Salsa20, curve constants,
Montgomery multiplication, modular exponentiation). Under the default ``flag`` policy a
flagged file stays in the corpus and its manifest entry lists the reasons (detector and
evidence); under ``--exclude-crypto`` it leaves the splits and is listed in
``crypto_excluded`` with its reasons instead. The split of the other files does not change
(it depends on each file's own hash).

Output layout of ``--out DIR`` (bytes are deterministic for the same inputs):

* ``manifest.json``   format ``fwassist-corpus/2``: allowlist, crypto policy, sources with
  verdicts, accepted files (package, version, path, license, sha256, bytes, split, and
  ``crypto`` reasons when flagged), files excluded by the crypto policy, refusal counts,
  license set, totals.
* ``train.jsonl`` / ``test.jsonl``  one ``{"sha256", "package", "path", "text"}`` per line.
* ``manifest.sha256``  hex sha256 of the ``manifest.json`` bytes.

Every output is written to a temp file and moved into place with ``os.replace``.

Usage: ``python corpus.py --out DIR [--sources sources.json] [--cache DIR]
[--sdist-dir DIR] [--test-percent 5] [--exclude-crypto]``. Standard library only.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crypto_gate import crypto_reasons  # noqa: E402

FORMAT = "fwassist-corpus/2"
CRYPTO_POLICIES = ("flag", "exclude")
ALLOWLIST: tuple[str, ...] = (
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "MIT",
    "PSF-2.0",
    "Zlib",
)
MIN_BYTES = 256
MAX_BYTES = 256 * 1024
HEAD_CHARS = 4096
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")
SOURCE_SUFFIXES = (".c", ".h")

# SPDX ids the normaliser recognises in a free-form ``License:`` field. Ids outside the
# allowlist are recognised only so that they can be refused with a precise reason.
KNOWN_SPDX_IDS: frozenset[str] = frozenset(
    ALLOWLIST
    + (
        "0BSD", "AGPL-3.0-only", "AGPL-3.0-or-later", "BSD-4-Clause", "BSL-1.0", "CC0-1.0",
        "CNRI-Python", "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later",
        "LGPL-2.0-only", "LGPL-2.0-or-later", "LGPL-2.1-only", "LGPL-2.1-or-later",
        "LGPL-3.0-only", "LGPL-3.0-or-later", "MIT-0", "MPL-2.0", "Python-2.0", "Unlicense",
        "GPL-2.0", "GPL-3.0", "LGPL-2.1", "LGPL-3.0", "AGPL-3.0",
    )
)

_CANONICAL_IDS: dict[str, str] = {i.lower(): i for i in KNOWN_SPDX_IDS}

# Free-form license strings (License field or classifier tail), lower-cased, to SPDX.
# A value of None marks a string that names a family only; it is resolved (or not) by
# reading the package's LICENSE file, see ``confirm_from_license_text``.
LICENSE_NAME_TABLE: dict[str, str | None] = {
    "mit": "MIT",
    "mit license": "MIT",
    "the mit license": "MIT",
    "mit style": None,
    "mit-style": None,
    "expat": "MIT",
    "bsd": None,
    "bsd license": None,
    "bsd-style": None,
    "new bsd license": "BSD-3-Clause",
    "modified bsd license": "BSD-3-Clause",
    "bsd 3-clause": "BSD-3-Clause",
    "3-clause bsd license": "BSD-3-Clause",
    "bsd 2-clause": "BSD-2-Clause",
    "simplified bsd license": "BSD-2-Clause",
    "2-clause bsd license": "BSD-2-Clause",
    "apache": "Apache-2.0",
    "apache 2.0": "Apache-2.0",
    "apache license 2.0": "Apache-2.0",
    "apache license, version 2.0": "Apache-2.0",
    "apache software license": "Apache-2.0",
    "apache software license 2.0": "Apache-2.0",
    "isc": "ISC",
    "isc license": "ISC",
    "isc license (iscl)": "ISC",
    "zlib": "Zlib",
    "zlib/libpng license": "Zlib",
    "python software foundation license": "PSF-2.0",
    "psf": "PSF-2.0",
    "psf license": "PSF-2.0",
    "gpl": "GPL-2.0-or-later",
    "gnu general public license (gpl)": "GPL-2.0-or-later",
    "gnu general public license v2 (gplv2)": "GPL-2.0-only",
    "gnu general public license v2 or later (gplv2+)": "GPL-2.0-or-later",
    "gnu general public license v3 (gplv3)": "GPL-3.0-only",
    "gnu general public license v3 or later (gplv3+)": "GPL-3.0-or-later",
    "lgpl": "LGPL-2.1-or-later",
    "gnu library or lesser general public license (lgpl)": "LGPL-2.1-or-later",
    "gnu lesser general public license v2 (lgplv2)": "LGPL-2.1-only",
    "gnu lesser general public license v2 or later (lgplv2+)": "LGPL-2.1-or-later",
    "gnu lesser general public license v3 (lgplv3)": "LGPL-3.0-only",
    "gnu lesser general public license v3 or later (lgplv3+)": "LGPL-3.0-or-later",
    "gnu affero general public license v3": "AGPL-3.0-only",
    "gnu affero general public license v3 or later (agplv3+)": "AGPL-3.0-or-later",
    "mozilla public license 2.0 (mpl 2.0)": "MPL-2.0",
}

SPDX_LINE = re.compile(r"SPDX-License-Identifier:\s*([^\n]*)")
GPL_TEXT = re.compile(
    r"(?<![A-Za-z])[AL]?GPL|GNU (?:General Public|Lesser|Library General Public|Affero)",
    re.IGNORECASE,
)
# "generated by" counts only where it opens a comment line or follows "this file is", so
# that prose such as "a string generated by Lua" does not mark a hand-written file.
GENERATED_TEXT = re.compile(
    r"Generated by Cython|DO NOT EDIT|automatically generated|auto-?generated"
    r"|\bgenerated file\b|this (?:file|code) (?:is|was) (?:\w+ )?generated"
    r"|^[ \t/*#!-]*generated (?:by|from|with)\b",
    re.IGNORECASE | re.MULTILINE,
)
COPYLEFT_ID = re.compile(r"^(?:A|L)?GPL-")


# ---------------------------------------------------------------------------------------
# SPDX expressions
# ---------------------------------------------------------------------------------------

SpdxNode = tuple[Any, ...]  # ("id", name) | ("with", name, exception) | ("and"|"or", left, right)


def _tokenize_spdx(expr: str) -> list[str]:
    """Splits an SPDX expression into ids, operators and parentheses."""
    tokens = re.findall(r"\(|\)|[^\s()]+", expr)
    if not tokens:
        raise ValueError("empty license expression")
    return tokens


class _SpdxParser:
    """Recursive-descent parser: or := and ('OR' and)*; and := atom ('AND' atom)*."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ValueError("unexpected end of license expression")
        self.pos += 1
        return token

    def parse(self) -> SpdxNode:
        node = self.parse_or()
        if self.peek() is not None:
            raise ValueError(f"unexpected token {self.peek()!r} in license expression")
        return node

    def parse_or(self) -> SpdxNode:
        node = self.parse_and()
        while (self.peek() or "").upper() == "OR":
            self.take()
            node = ("or", node, self.parse_and())
        return node

    def parse_and(self) -> SpdxNode:
        node = self.parse_atom()
        while (self.peek() or "").upper() == "AND":
            self.take()
            node = ("and", node, self.parse_atom())
        return node

    def parse_atom(self) -> SpdxNode:
        token = self.take()
        if token == "(":
            node = self.parse_or()
            if self.take() != ")":
                raise ValueError("missing ')' in license expression")
            return node
        if token == ")" or token.upper() in ("AND", "OR", "WITH"):
            raise ValueError(f"unexpected {token!r} in license expression")
        if not re.fullmatch(r"[A-Za-z0-9.+-]+", token):
            raise ValueError(f"invalid license id {token!r}")
        name = _CANONICAL_IDS.get(token.lower(), token)  # SPDX ids match case-insensitively
        if (self.peek() or "").upper() == "WITH":
            self.take()
            return ("with", name, self.take())
        return ("id", name)


def parse_spdx(expr: str) -> SpdxNode:
    """Parses an SPDX license expression; raises ValueError when it is malformed."""
    return _SpdxParser(_tokenize_spdx(expr)).parse()


def _node_allowed(node: SpdxNode, allowlist: frozenset[str]) -> bool:
    kind = node[0]
    if kind == "id":
        return node[1] in allowlist
    if kind == "with":  # an exception only adds permissions to its base license
        return node[1] in allowlist
    if kind == "or":
        return _node_allowed(node[1], allowlist) or _node_allowed(node[2], allowlist)
    return _node_allowed(node[1], allowlist) and _node_allowed(node[2], allowlist)


def spdx_allowed(expr: str, allowlist: tuple[str, ...] = ALLOWLIST) -> bool:
    """True if the SPDX expression ``expr`` may be used under the allowlist. Malformed
    expressions and unknown ids are not allowed."""
    try:
        node = parse_spdx(expr)
    except ValueError:
        return False
    return _node_allowed(node, frozenset(allowlist))


def _node_ids(node: SpdxNode) -> set[str]:
    if node[0] in ("id", "with"):
        return {node[1]}
    return _node_ids(node[1]) | _node_ids(node[2])


def spdx_ids(expr: str) -> set[str]:
    """All license ids named in ``expr`` (empty when malformed)."""
    try:
        return _node_ids(parse_spdx(expr))
    except ValueError:
        return set()


def _node_used_ids(node: SpdxNode, allowlist: frozenset[str]) -> set[str]:
    if node[0] in ("id", "with"):
        return {node[1]}
    if node[0] == "or":
        return set().union(
            *(_node_used_ids(n, allowlist) for n in node[1:] if _node_allowed(n, allowlist))
        )
    return _node_used_ids(node[1], allowlist) | _node_used_ids(node[2], allowlist)


def used_ids(expr: str, allowlist: tuple[str, ...] = ALLOWLIST) -> set[str]:
    """The ids that an allowed expression is used under (the allowed OR alternatives)."""
    return _node_used_ids(parse_spdx(expr), frozenset(allowlist))


def refusal_reason(expr: str) -> str:
    """Why an expression is not allowed: copyleft, unknown-license or not-allowlisted."""
    ids = spdx_ids(expr)
    if not ids:
        return "unknown-license"
    if any(COPYLEFT_ID.match(i) for i in ids):
        return "copyleft"
    if not ids <= KNOWN_SPDX_IDS:
        return "unknown-license"
    return "not-allowlisted"


# ---------------------------------------------------------------------------------------
# Package license
# ---------------------------------------------------------------------------------------


def read_pkg_info(text: str) -> dict[str, list[str]]:
    """Header fields of a PKG-INFO file (core metadata), each as a list of values."""
    message = email.parser.Parser().parsestr(text, headersonly=True)
    fields: dict[str, list[str]] = {}
    for key, value in message.items():
        fields.setdefault(key.lower(), []).append(str(value).strip())
    return fields


def _as_known_spdx(text: str) -> str | None:
    """``text`` itself if it is an SPDX expression made only of known ids."""
    ids = spdx_ids(text)
    if ids and ids <= KNOWN_SPDX_IDS:
        return " ".join(_tokenize_spdx(text))
    return None


def confirm_from_license_text(family: str, license_texts: list[str]) -> str | None:
    """Resolves an ambiguous family name ("bsd", "mit style") from the LICENSE file texts;
    None when the texts do not confirm one license unambiguously."""
    joined = "\n".join(license_texts)
    if not joined or GPL_TEXT.search(joined):
        return None
    if family.startswith("bsd"):
        if "Redistributions of source code" not in joined or "advertising" in joined.lower():
            return None
        if re.search(r"Neither the name|names of its\s+contributors may", joined):
            return "BSD-3-Clause"
        return "BSD-2-Clause"
    if family.startswith("mit"):
        has_grant = "Permission is hereby granted, free of charge" in joined
        has_warranty = re.search(r'PROVIDED\s+"AS IS"', joined) is not None
        return "MIT" if has_grant and has_warranty else None
    return None


def _normalise_name(raw: str, license_texts: list[str]) -> str | None:
    """One free-form license name through the explicit table (None if unresolved)."""
    key = " ".join(raw.lower().split())
    if key not in LICENSE_NAME_TABLE:
        return _as_known_spdx(raw)
    mapped = LICENSE_NAME_TABLE[key]
    return mapped if mapped is not None else confirm_from_license_text(key, license_texts)


def _classifier_names(fields: dict[str, list[str]]) -> list[str]:
    names = []
    for value in fields.get("classifier", []):
        parts = [p.strip() for p in value.split("::")]
        if parts[0] == "License" and len(parts) >= 2 and parts[-1] != "OSI Approved":
            names.append(parts[-1])
    return names


def package_license(pkg_info: str, license_texts: list[str]) -> tuple[str | None, str]:
    """(SPDX expression or None, raw license string) of a package's PKG-INFO."""
    fields = read_pkg_info(pkg_info)
    expression = (fields.get("license-expression") or [""])[0]
    if expression:
        return (expression if spdx_ids(expression) else None), expression
    raw = (fields.get("license") or [""])[0]
    if raw and raw.upper() != "UNKNOWN" and "\n" not in raw:
        spdx = _normalise_name(raw, license_texts)
        if spdx is not None:
            return spdx, raw
    classifiers = _classifier_names(fields)
    mapped = [_normalise_name(name, license_texts) for name in classifiers]
    if classifiers and all(m is not None for m in mapped):
        # Several license classifiers carry no OR/AND meaning; require all of them.
        unique = sorted(set(m for m in mapped if m is not None))
        return " AND ".join(unique), " ; ".join(classifiers)
    return None, raw or " ; ".join(classifiers) or "UNKNOWN"


# ---------------------------------------------------------------------------------------
# File gate
# ---------------------------------------------------------------------------------------


def file_spdx(head: str) -> str | None:
    """The SPDX expression declared in a file head (several lines are ANDed)."""
    found = []
    for match in SPDX_LINE.finditer(head):
        expr = re.split(r"\*/|-->|\*\)", match.group(1))[0].strip().rstrip("*/ ").strip()
        if expr:
            found.append(expr)
    if len(found) > 1:
        return " AND ".join(f"({e})" if " " in e else e for e in found)
    return found[0] if found else None


def file_verdict(text: str, package_license: str) -> tuple[str, str]:
    """("accepted", effective SPDX expression) or ("refused"|"skipped", reason) for the
    normalised text of one source file of a package already accepted under
    ``package_license``."""
    head = text[:HEAD_CHARS]
    declared = file_spdx(head)
    if declared is not None:
        if not spdx_allowed(declared):
            return "refused", "spdx-not-allowed"
    elif GPL_TEXT.search(head):
        return "refused", "gpl-text"
    if GENERATED_TEXT.search(head):
        return "skipped", "generated"
    return "accepted", declared if declared is not None else package_license


def decode_source(data: bytes) -> str | None:
    """UTF-8 text with CRLF (and lone CR) normalised to LF; None if not text."""
    if b"\0" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text.replace("\r\n", "\n").replace("\r", "\n")


# ---------------------------------------------------------------------------------------
# Archives
# ---------------------------------------------------------------------------------------


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def find_archive(directory: Path, name: str, version: str) -> Path | None:
    """The sdist of ``name==version`` in ``directory`` (None if absent)."""
    if not directory.is_dir():
        return None
    want = canonical_name(name)
    for entry in sorted(directory.iterdir()):
        for suffix in ARCHIVE_SUFFIXES:
            stem = entry.name[: -len(suffix)] if entry.name.endswith(suffix) else None
            if stem and stem.endswith("-" + version):
                if canonical_name(stem[: -len(version) - 1]) == want:
                    return entry
    return None


def download_sdist(name: str, version: str, cache: Path) -> Path:
    """Downloads the sdist into ``cache`` with pip unless it is already there."""
    found = find_archive(cache, name, version)
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--no-build-isolation", f"{name}=={version}", "-d", str(cache),
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    found = find_archive(cache, name, version)
    if found is None:
        raise FileNotFoundError(f"pip did not produce an sdist for {name}=={version}")
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Member:
    """One regular file of an archive."""

    path: str
    size: int
    data: bytes


def iter_members(archive: Path, want: tuple[str, ...] | None = None) -> Iterator[Member]:
    """Regular files of a tar or zip archive (payload read only for names ending in
    ``want``, or for all when ``want`` is None); links and directories are ignored."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                wanted = want is None or info.filename.endswith(want)
                read = wanted and info.file_size <= MAX_BYTES
                yield Member(info.filename, info.file_size, zf.read(info) if read else b"")
        return
    with tarfile.open(archive) as tf:
        for info in tf:
            if not info.isreg():
                continue
            wanted = want is None or info.name.endswith(want)
            handle = tf.extractfile(info) if wanted and info.size <= MAX_BYTES else None
            yield Member(info.name, info.size, handle.read() if handle is not None else b"")


def is_top_level(path: str) -> bool:
    return path.strip("/").count("/") == 1


def is_license_file(path: str) -> bool:
    base = path.rsplit("/", 1)[-1].upper()
    return base.startswith(("LICENSE", "LICENCE", "COPYING"))


# ---------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """A source file that passed the file gate (before deduplication)."""

    package: str
    version: str
    path: str
    license: str
    text: str
    sha256: str


@dataclass
class BuildState:
    """Everything collected while reading the archives."""

    sources: list[dict[str, str]] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)


def load_sources(path: Path) -> list[dict[str, str]]:
    """The pinned source list; every entry must be a pypi-sdist with name and version."""
    entries = json.loads(path.read_text(encoding="utf-8"))
    for entry in entries:
        if entry.get("kind") != "pypi-sdist" or not entry.get("name") or not entry.get("version"):
            raise ValueError(f"bad source entry: {entry!r}")
    return entries


def locate_archive(name: str, version: str, sdist_dir: Path | None, cache: Path | None) -> Path:
    """The sdist from ``sdist_dir`` (must exist there) or downloaded into ``cache``."""
    if sdist_dir is not None:
        found = find_archive(sdist_dir, name, version)
        if found is None:
            raise FileNotFoundError(f"no sdist for {name}=={version} in {sdist_dir}")
        return found
    if cache is None:
        raise ValueError("either sdist_dir or cache is required")
    return download_sdist(name, version, cache)


def scan_package(name: str, version: str, archive: Path, state: BuildState) -> None:
    """Applies the package gate, then the file gate to each .c/.h file of one archive."""
    members = list(iter_members(archive))
    top = [m for m in members if is_top_level(m.path)]
    pkg_info = next((m for m in top if m.path.endswith("/PKG-INFO")), None)
    license_texts = [m.data.decode("utf-8", "replace") for m in top if is_license_file(m.path)]
    spdx, raw = (None, "missing PKG-INFO")
    if pkg_info is not None:
        spdx, raw = package_license(pkg_info.data.decode("utf-8", "replace"), license_texts)
    entry = {"name": name, "version": version, "archive": archive.name,
             "archive_sha256": sha256_file(archive), "license": spdx or raw}
    if spdx is None or not spdx_allowed(spdx):
        reason = refusal_reason(spdx) if spdx is not None else "unknown-license"
        state.sources.append({**entry, "verdict": "refused", "reason": reason})
        state.refused[f"package:{reason}"] += 1
        return
    state.sources.append({**entry, "verdict": "accepted", "reason": ""})
    sources = sorted((m for m in members if m.path.endswith(SOURCE_SUFFIXES)), key=lambda m: m.path)
    for member in sources:
        scan_file(name, version, spdx, member, state)


def scan_file(
    name: str, version: str, package_spdx: str, member: Member, state: BuildState
) -> None:
    """Gates one source file, counting refusals and collecting accepted candidates."""
    if member.size < MIN_BYTES:
        state.refused["file:too-small"] += 1
        return
    if member.size > MAX_BYTES:
        state.refused["file:too-large"] += 1
        return
    text = decode_source(member.data)
    if text is None:
        state.refused["file:not-text"] += 1
        return
    verdict, detail = file_verdict(text, package_spdx)
    if verdict != "accepted":
        state.refused[f"file:{detail}"] += 1
        return
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    state.candidates.append(Candidate(name, version, member.path, detail, text, digest))


def split_of(sha256: str, test_percent: int) -> str:
    """Deterministic held-out split of a file by its content hash."""
    return "test" if int(sha256[:8], 16) % 100 < test_percent else "train"


def deduplicate(candidates: list[Candidate], refused: Counter[str]) -> list[Candidate]:
    """Keeps the first candidate of each text in (package, version, path) order."""
    seen: set[str] = set()
    kept = []
    for cand in sorted(candidates, key=lambda c: (c.package, c.version, c.path)):
        if cand.sha256 in seen:
            refused["file:duplicate"] += 1
            continue
        seen.add(cand.sha256)
        kept.append(cand)
    return kept


def apply_crypto_policy(
    kept: list[Candidate], policy: str, refused: Counter[str]
) -> tuple[list[Candidate], dict[str, list[dict[str, str]]], list[dict[str, object]]]:
    """(files that stay, crypto reasons by sha256 of every flagged file, manifest entries of
    the files the ``exclude`` policy removed)."""
    if policy not in CRYPTO_POLICIES:
        raise ValueError(f"crypto policy must be one of {CRYPTO_POLICIES}, not {policy!r}")
    reasons: dict[str, list[dict[str, str]]] = {}
    stay, excluded = [], []
    for cand in kept:
        found = crypto_reasons(cand.text)
        if found:
            reasons[cand.sha256] = found
        if found and policy == "exclude":
            refused["file:crypto"] += 1
            excluded.append({"package": cand.package, "version": cand.version, "path": cand.path,
                             "sha256": cand.sha256, "crypto": found})
        else:
            stay.append(cand)
    return stay, reasons, excluded


def make_manifest(
    state: BuildState, kept: list[Candidate], test_percent: int, crypto_policy: str = "flag",
    crypto: dict[str, list[dict[str, str]]] | None = None,
    crypto_excluded: list[dict[str, object]] | None = None,
) -> dict[str, object]:
    """The manifest dictionary (see module docstring)."""
    crypto = crypto or {}
    files = []
    totals = {"files_train": 0, "files_test": 0, "bytes_train": 0, "bytes_test": 0,
              "files_crypto_flagged": len(crypto),
              "files_crypto_excluded": len(crypto_excluded or [])}
    license_set: set[str] = set()
    for cand in kept:
        split = split_of(cand.sha256, test_percent)
        size = len(cand.text.encode("utf-8"))
        entry: dict[str, object] = {
            "package": cand.package, "version": cand.version, "path": cand.path,
            "license": cand.license, "sha256": cand.sha256, "bytes": size, "split": split}
        if cand.sha256 in crypto:
            entry["crypto"] = crypto[cand.sha256]
        files.append(entry)
        totals[f"files_{split}"] += 1
        totals[f"bytes_{split}"] += size
        license_set |= used_ids(cand.license)
    verdicts = Counter(s["verdict"] for s in state.sources)
    totals["packages_accepted"] = verdicts["accepted"]
    totals["packages_refused"] = verdicts["refused"]
    return {
        "format": FORMAT,
        "allowlist": list(ALLOWLIST),
        "crypto_policy": crypto_policy,
        "crypto_excluded": crypto_excluded or [],
        "test_percent": test_percent,
        "sources": sorted(state.sources, key=lambda s: (canonical_name(s["name"]), s["version"])),
        "files": files,
        "refused": dict(sorted(state.refused.items())),
        "license_set": sorted(license_set),
        "totals": totals,
    }


def write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temp file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def jsonl_bytes(records: list[Candidate]) -> bytes:
    lines = [
        json.dumps({"sha256": c.sha256, "package": c.package, "path": c.path, "text": c.text},
                   sort_keys=True, ensure_ascii=False)
        for c in records
    ]
    return ("\n".join(lines) + "\n" if lines else "").encode("utf-8")


def write_outputs(
    out: Path, manifest: dict[str, object], kept: list[Candidate], test_percent: int
) -> None:
    """Writes the splits, then the manifest, then its hash (the last file marks completion)."""
    for split in ("train", "test"):
        chosen = [c for c in kept if split_of(c.sha256, test_percent) == split]
        write_atomic(out / f"{split}.jsonl", jsonl_bytes(chosen))
    text = json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    manifest_bytes = text.encode("utf-8")
    write_atomic(out / "manifest.json", manifest_bytes)
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    write_atomic(out / "manifest.sha256", (digest + "\n").encode("ascii"))


def build_corpus(
    sources: list[dict[str, str]],
    out: Path,
    *,
    sdist_dir: Path | None = None,
    cache: Path | None = None,
    test_percent: int = 5,
    exclude_crypto: bool = False,
) -> dict[str, object]:
    """Builds the corpus into ``out`` and returns the manifest."""
    if not 0 <= test_percent <= 100:
        raise ValueError("test_percent must be within [0, 100]")
    state = BuildState()
    for entry in sources:
        archive = locate_archive(entry["name"], entry["version"], sdist_dir, cache)
        scan_package(entry["name"], entry["version"], archive, state)
    kept = deduplicate(state.candidates, state.refused)
    policy = "exclude" if exclude_crypto else "flag"
    kept, crypto, excluded = apply_crypto_policy(kept, policy, state.refused)
    manifest = make_manifest(state, kept, test_percent, policy, crypto, excluded)
    write_outputs(Path(out), manifest, kept, test_percent)
    return manifest


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sources", type=Path, default=here / "sources.json")
    parser.add_argument("--cache", type=Path, default=Path("sdist_cache"))
    parser.add_argument("--sdist-dir", type=Path, default=None,
                        help="use archives already in DIR instead of downloading")
    parser.add_argument("--test-percent", type=int, default=5)
    parser.add_argument("--exclude-crypto", action="store_true",
                        help="leave out files that implement cryptographic primitives "
                             "(default: keep them, flagged in the manifest)")
    args = parser.parse_args(argv)
    try:
        manifest = build_corpus(load_sources(args.sources), args.out, sdist_dir=args.sdist_dir,
                                cache=args.cache, test_percent=args.test_percent,
                                exclude_crypto=args.exclude_crypto)
    except (FileNotFoundError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"corpus: error: {exc}", file=sys.stderr)
        return 1
    summary = {"crypto_policy": manifest["crypto_policy"], "totals": manifest["totals"],
               "refused": manifest["refused"],
               "license_set": manifest["license_set"]}
    print(json.dumps(summary, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
