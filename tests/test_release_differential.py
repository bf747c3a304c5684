# SPDX-License-Identifier: Apache-2.0
"""The two release verifiers against each other: the C++ core (Model.load(trust=...)) and the
pure-Python reference (fwassist.release.verify) must give the same status for every case of
tests/release_cases.py and for a few hundred seeded mutations of a valid co-signed release:
byte flips, truncations, line swaps and duplicates, JSON edits of the bundle, the statement
and the policy, and statements edited then signed again (valid signatures over wrong content).

Known intentional differences (docs/releases.md, "Two verifiers"), kept out of the comparison:
* the counter: the core requires one (none is counter_unavailable), the reference verifier
  skips step 7 when it is given none. Every comparison here passes both the same file store
  (a fresh one holding 0 when the case has none).
* no_crypto: the core refuses a policy first when it has no crypto at all (step 1); the
  reference verifier needs ``cryptography`` for every check. Not reachable here: this test
  needs ``cryptography`` and gives the core its callback when it has no OpenSSL.

The core runs both ways when it has OpenSSL: with libcrypto and with the ``cryptography``
verification callback the wheels use (fwassist._trust.cryptography_verifier).

Signed policies (docs/releases.md §5): the core with root keys (Model.load(root_keys=...,
policy_signature=..., policy_counter=...)) against the reference's verify_policy followed by
verify, on good, tampered, wrong-root, forged, under-threshold, older and unsigned policies
and on mutations of the policy's signature file. The policy counter, like the release counter,
is required by the core; the reference takes the stored version as an integer."""

from __future__ import annotations

import base64
import json
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

pytest.importorskip("cryptography", reason="the sign extra (cryptography) is not installed")

from release_cases import write_cases  # noqa: E402

import fwassist  # noqa: E402
from fwassist import ArtifactError, Model, ReleaseError, _trust  # noqa: E402
from fwassist.release import (FileCounter, make_policy, sign, sign_policy, verify,  # noqa: E402
                              verify_policy)
from fwassist.release._formats import (PAYLOAD_TYPE, POLICY_PAYLOAD_TYPE, canonical,  # noqa: E402
                                       pae, render_bundle_line)
from fwassist.release.keys import PemSigner, generate_key  # noqa: E402

SEED = 20261207
N_MUTATIONS = 330

VERIFIERS: list[Optional[str]] = (["libcrypto", "callback"]
                                  if fwassist._core.have_release_crypto() else ["callback"])


def python_status(model: Path, sig: Path, policy: Path, counter: Path) -> str:
    try:
        return verify(model, sig, policy, FileCounter(counter)).status
    except (ReleaseError, ArtifactError) as e:
        return str(e.status)


def native_status(model: Path, sig: Path, policy: Path, counter: Path,
                  how: Optional[str]) -> str:
    try:
        m = Model.load(model)  # the artifact first, as Model.load(trust=) does
        _trust.verify(m._native, str(model), policy, sig, counter,
                      _trust.cryptography_verifier() if how == "callback" else None)
    except (ReleaseError, ArtifactError) as e:
        return str(e.status)
    # Model.load(trust=) itself gives the same verdict (the public path).
    Model.load(model, trust=policy, signature=sig, counter=counter)
    return "ok"


def both(model: Path, sig: Path, policy: Path, counter: Path) -> dict[str, str]:
    got = {"python": python_status(model, sig, policy, counter)}
    for how in VERIFIERS:
        got[str(how)] = native_status(model, sig, policy, counter, how)
    return got


def zero_counter(d: Path) -> Path:
    c = d / "counter0"
    if not c.exists():
        FileCounter.init(c, 0)
    return c


@pytest.fixture(scope="module")
def models(build_tiny_model: Any) -> tuple[bytes, bytes]:
    """Two complete models (Model.load opens them), different bytes."""
    return (Path(build_tiny_model().fwa_path).read_bytes(),
            Path(build_tiny_model(seed=4321).fwa_path).read_bytes())


def test_release_cases_agree(tmp_path: Path, models: tuple[bytes, bytes]) -> None:
    for c in write_cases(tmp_path, models):
        d = tmp_path / c["dir"]
        counter = d / "counter" if c["counter"] else zero_counter(d)
        got = both(d / "model.fwa", d / "model.fwa.sig", d / "policy.json", counter)
        assert set(got.values()) == {c["status"]}, (c["name"], got)


class Base:
    """A valid release co-signed by a supplier (P-256) and an OEM (Ed25519), its policy and
    the keys to sign mutated statements again."""

    def __init__(self, d: Path, model: bytes) -> None:
        self.dir = d
        self.model = d / "model.fwa"
        self.model.write_bytes(model)
        self.sup: PemSigner = generate_key("ecdsa-p256-sha256")[1]
        self.oem: PemSigner = generate_key("ed25519")[1]
        self.sup2: PemSigner = generate_key("ecdsa-p256-sha256")[1]
        sign(self.model, self.sup, 5, "RXSWIN-1")
        sign(self.model, self.oem, 5, "RXSWIN-1")
        self.sig = (d / "model.fwa.sig").read_bytes()
        self.policy = make_policy([("supplier", self.sup.public_key_pem),
                                   ("oem", self.oem.public_key_pem),
                                   ("supplier", self.sup2.public_key_pem)],
                                  {"supplier": 1, "oem": 1}, min_security_version=2)
        self.payload = base64.b64decode(json.loads(self.sig.splitlines()[0])["dsseEnvelope"]
                                        ["payload"])
        self.counter = zero_counter(d)

    def resign(self, payload: bytes, signers: list[PemSigner]) -> bytes:
        return b"".join(render_bundle_line(PAYLOAD_TYPE, payload, s.keyid,
                                           s.sign(pae(PAYLOAD_TYPE, payload))) + b"\n"
                        for s in signers)


Mutation = Callable[[random.Random, Base], tuple[bytes, bytes]]  # -> (sig, policy)


def _flip(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3])):
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def _json_edit(rng: random.Random, obj: Any) -> Any:
    """One random edit somewhere in a JSON tree: change, delete or add a member, change an
    element's type, duplicate or drop an array element."""
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append((node, k))
                walk(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append((node, i))
                walk(v)
    walk(obj)
    parent, key = rng.choice(paths)
    old = parent[key]
    op = rng.randrange(7)
    if op == 0 and isinstance(parent, dict):
        del parent[key]
    elif op == 1 and isinstance(parent, dict):
        parent[key + "x"] = old
    elif op == 2 and isinstance(parent, list):
        parent.append(old)
    elif op == 3 and isinstance(parent, list):
        parent.pop(key)
    elif isinstance(old, bool) or old is None:
        parent[key] = rng.choice([0, "", True, False, None, [], {}])
    elif isinstance(old, int):
        parent[key] = rng.choice([old + 1, old - 1, -1, 0, 2 ** 53 + 1, str(old), 1.5, None])
    elif isinstance(old, str):
        parent[key] = rng.choice([old[:-1], old + "0", old.upper(), "", "x" * 5000, 7, None,
                                  old.replace("a", "b", 1)])
    else:
        parent[key] = rng.choice([None, "", 0, [], {}])
    return obj


def m_flip_sig(rng: random.Random, b: Base) -> tuple[bytes, bytes]:
    return _flip(rng, b.sig), b.policy


def m_truncate_sig(rng: random.Random, b: Base) -> tuple[bytes, bytes]:
    return b.sig[:rng.randrange(len(b.sig))], b.policy


def m_lines(rng: random.Random, b: Base) -> tuple[bytes, bytes]:
    lines = b.sig.splitlines(keepends=True)
    op = rng.randrange(4)
    if op == 0:
        lines.reverse()
    elif op == 1:
        lines.append(lines[rng.randrange(len(lines))])
    elif op == 2:
        lines = [lines[rng.randrange(len(lines))]]
    else:
        lines.insert(rng.randrange(len(lines) + 1), rng.choice([b"\n", b"{}\n", b" \n"]))
    return b"".join(lines), b.policy


def m_bundle_json(rng: random.Random, b: Base) -> tuple[bytes, bytes]:
    lines = b.sig.splitlines(keepends=True)
    n = rng.randrange(len(lines))
    j = _json_edit(rng, json.loads(lines[n]))
    lines[n] = canonical(j) + b"\n"
    return b"".join(lines), b.policy


def _statement_edit(rng: random.Random, b: Base) -> bytes:
    st = json.loads(b.payload)
    if rng.random() < 0.5:
        pred = st["predicate"]
        k = rng.choice(["security_version", "rxswin", "model_card_sha256", "artifact_format"])
        pred[k] = rng.choice({
            "security_version": [1, 4, 6, 0, 2 ** 53, 2 ** 53 + 1, -1, "5"],
            "rxswin": [None, "", "R" * 129, "R\u00e9", "RXSWIN-2"],
            "model_card_sha256": ["0" * 64, pred["model_card_sha256"].upper(), "00"],
            "artifact_format": [[1, 1], [2, 0], [1], "1.0"]}[k])
        return canonical(st)
    return canonical(_json_edit(rng, st))


def m_statement_unsigned(rng: random.Random, b: Base) -> tuple[bytes, bytes]:
    payload = _statement_edit(rng, b)
    lines = []
    for line in b.sig.splitlines():
        j = json.loads(line)
        j["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
        lines.append(canonical(j) + b"\n")
    return b"".join(lines), b.policy


def m_statement_resigned(rng: random.Random, b: Base) -> tuple[bytes, bytes]:
    payload = _statement_edit(rng, b)
    if rng.random() < 0.2:  # or not canonical JSON at all
        payload = json.dumps(json.loads(payload), indent=rng.choice([None, 1])).encode()
    return b.resign(payload, rng.choice([[b.sup, b.oem], [b.oem, b.sup], [b.sup]])), b.policy


def m_policy_json(rng: random.Random, b: Base) -> tuple[bytes, bytes]:
    pol = json.loads(b.policy)
    if rng.random() < 0.4:
        k = rng.choice(["policy_version", "min_security_version", "revoked_keyids",
                        "required_roles"])
        pol[k] = rng.choice({
            "policy_version": [0, 2, -1, 2 ** 53 + 1],
            "min_security_version": [5, 6, 0, -1],
            "revoked_keyids": [[b.sup.keyid], [b.oem.keyid], [b.sup2.keyid],
                               [b.sup.keyid, b.sup.keyid], ["ab"]],
            "required_roles": [{"supplier": 2, "oem": 1}, {"oem": 1}, {}, {"supplier": 0},
                               {"supplier": 1, "oem": 1, "tester": 1}, {"oem": 2}]}[k])
        raw = json.dumps(pol).encode()
    else:
        raw = canonical(_json_edit(rng, pol))
    return b.sig, raw


def m_policy_revoke(rng: random.Random, b: Base) -> tuple[bytes, bytes]:
    """Revokes some of the keys (listed or not): revoked, untrusted or unsatisfiable."""
    keys = [b.sup, b.oem, b.sup2, generate_key("ed25519")[1]]
    pol = json.loads(b.policy)
    pol["revoked_keyids"] = sorted({k.keyid for k in rng.sample(keys, rng.randrange(1, 3))})
    return b.sig, json.dumps(pol, indent=rng.choice([None, 2])).encode()


def m_policy_bytes(rng: random.Random, b: Base) -> tuple[bytes, bytes]:
    if rng.random() < 0.5:
        return b.sig, _flip(rng, b.policy)
    return b.sig, b.policy[:rng.randrange(len(b.policy))]


MUTATIONS: list[Mutation] = [m_flip_sig, m_truncate_sig, m_lines, m_bundle_json,
                             m_statement_unsigned, m_statement_resigned, m_statement_resigned,
                             m_policy_json, m_policy_json, m_policy_revoke, m_policy_bytes]


def test_mutations_agree(tmp_path: Path, models: tuple[bytes, bytes]) -> None:
    b = Base(tmp_path, models[0])
    rng = random.Random(SEED)
    sig, pol = tmp_path / "mutated.sig", tmp_path / "mutated-policy.json"
    seen: dict[str, int] = {}
    disagreements = []
    for n in range(N_MUTATIONS):
        mutate = MUTATIONS[n % len(MUTATIONS)]
        s, p = mutate(rng, b)
        sig.write_bytes(s)
        pol.write_bytes(p)
        got = both(b.model, sig, pol, b.counter)
        if len(set(got.values())) != 1:
            keep = tmp_path / f"disagreement-{n}"
            keep.mkdir()
            shutil.copyfile(sig, keep / "model.fwa.sig")
            shutil.copyfile(pol, keep / "policy.json")
            disagreements.append((n, mutate.__name__, got))
        status = got["python"]
        seen[status] = seen.get(status, 0) + 1
    assert not disagreements, "\n".join(map(str, disagreements))
    # The mutations reach every step of the order, not only the parsers.
    assert {"ok", "signature_malformed", "signature_invalid", "subject_mismatch", "untrusted",
            "revoked", "rollback", "policy_malformed", "policy_unsatisfiable"} <= set(seen), seen


def test_counter_file_is_shared(tmp_path: Path, models: tuple[bytes, bytes]) -> None:
    """fwassist.release.FileCounter / `fwassist counter` and the core's file store are one
    format: each reads what the other wrote, advances included, and refuses the same files."""
    from release_fixtures import cli

    b = Base(tmp_path, models[0])
    c = tmp_path / "counter"
    FileCounter.init(c, 3)                                    # Python writes,
    assert _trust.counter_read(c) == 3                        # the core reads
    pol = tmp_path / "policy.json"
    pol.write_bytes(b.policy)
    m = Model.load(b.model, trust=pol, counter=FileCounter(c))
    m.commit_security_version(FileCounter(c))                 # the core advances,
    assert FileCounter(c).read() == 5                         # Python reads
    assert cli("counter", "advance", str(c), "--value", "7")[0] == 0
    assert _trust.counter_read(c) == 7
    with pytest.raises(ReleaseError) as e:
        Model.load(b.model, trust=pol, counter=c)
    assert e.value.status == "rollback"
    d = tmp_path / "counter-core"
    _trust.counter_init(d, 4)                                 # the core writes,
    assert cli("counter", "read", str(d))[1].strip() == "4"   # the CLI reads
    assert cli("counter", "init", str(tmp_path / "counter-cli"), "--value", "9")[0] == 0
    assert _trust.counter_read(tmp_path / "counter-cli") == 9
    for bad in [b"", b"3", b"07\n", b"-1\n", b" 3\n", b"3\n\n", b"3\r\n", b"+3\n",
                b"9007199254740993\n", b"99999999999999999\n", b"\xff\n"]:
        c.write_bytes(bad)
        with pytest.raises(ReleaseError) as e:
            FileCounter(c).read()
        assert e.value.status == "counter_unavailable", bad
        with pytest.raises(ReleaseError) as e:
            _trust.counter_read(c)
        assert e.value.status == "counter_unavailable", bad
    for good in [b"0\n", b"9007199254740992\n"]:
        c.write_bytes(good)
        assert FileCounter(c).read() == _trust.counter_read(c) == int(good)


def test_model_load_takes_the_release_objects(tmp_path: Path,
                                              models: tuple[bytes, bytes]) -> None:
    """Model.load(trust=) takes the reference side's TrustPolicy (the core parses its source
    bytes again) and FileCounter, and gives the reference verifier's verdict."""
    from fwassist.release import load_policy

    b = Base(tmp_path, models[0])
    pol = tmp_path / "policy.json"
    pol.write_bytes(b.policy)
    policy = load_policy(pol)
    m = Model.load(b.model, trust=policy, counter=FileCounter(b.counter))
    ref = verify(b.model, None, policy, FileCounter(b.counter))
    r = m.release
    assert r is not None
    assert (r.pin, r.security_version, r.rxswin, r.policy_version, r.counter) == (
        ref.pin, ref.security_version, ref.rxswin, ref.policy_version, ref.counter)
    # One vocabulary of per-signer words (valid / revoked / untrusted) on both sides.
    assert [(s.keyid, s.role, s.status) for s in r.signers] == [
        (s.keyid, s.role, s.status) for s in ref.signers]
    # The core checks the policy's bytes, not the parsed object: a doctored object is refused.
    with pytest.raises(ReleaseError) as e:
        Model.load(b.model, trust=type(policy)(**{**policy.__dict__, "source": b"{}"}),
                   counter=b.counter)
    assert e.value.status == "policy_malformed"


def test_the_callback_path(tmp_path: Path, models: tuple[bytes, bytes],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The path of a wheel built without OpenSSL: the core asks fwassist's `cryptography`
    callback for each signature and still enforces the rest; a failing callback is io_error
    (never "valid"); without `cryptography` there is no callback (the core: no_crypto)."""
    b = Base(tmp_path, models[0])
    pol = tmp_path / "policy.json"
    pol.write_bytes(b.policy)
    calls: list[int] = []
    check = _trust.cryptography_verifier()
    assert check is not None

    def counting(alg: int, spki: bytes, msg: bytes, sig: bytes) -> bool:
        calls.append(alg)
        return check(alg, spki, msg, sig)

    m = Model.load(b.model)
    r = _trust.verify(m._native, str(b.model), pol, None, b.counter, counting)
    assert sorted(calls) == [1, 2] and r.security_version == 5   # P-256 and Ed25519
    with pytest.raises(ReleaseError) as e:
        _trust.verify(m._native, str(b.model), pol, None, b.counter,
                      lambda *a: (_ for _ in ()).throw(RuntimeError("token removed")))
    assert e.value.status == "io_error" and "token removed" in str(e.value)
    # A callback that calls everything valid decides signatures only: the core still refuses
    # an untrusted signer, a revoked one and a statement about another artifact.
    stranger: PemSigner = generate_key("ecdsa-p256-sha256")[1]
    other = json.loads(b.payload)
    other["subject"][0]["digest"]["sha256"] = "0" * 64
    for sig, want in [(b.resign(b.payload, [stranger]), "untrusted"),
                      (b.resign(b.payload, [b.sup, b.oem]), "revoked"),
                      (b.resign(canonical(other), [b.sup, b.oem]), "subject_mismatch")]:
        p = pol
        if want == "revoked":
            p = tmp_path / "revoking.json"
            p.write_bytes(make_policy([("supplier", b.sup.public_key_pem),
                                       ("oem", b.oem.public_key_pem),
                                       ("supplier", b.sup2.public_key_pem)],
                                      {"supplier": 1, "oem": 1}, revoked_keyids=[b.sup.keyid]))
        with pytest.raises(ReleaseError) as e:
            _trust.verify(m._native, str(b.model), p, sig, b.counter, lambda *a: True)
        assert e.value.status == want
    monkeypatch.setitem(__import__("sys").modules, "cryptography", None)
    assert _trust.cryptography_verifier() is None


def test_release_cases_through_the_c_abi(tmp_path: Path, models: tuple[bytes, bytes]) -> None:
    """The same cases through the C ABI alone (fwa_open_options.trust with the file store), by
    cffi on the installed C package ($FWA_C_PREFIX, which tests/run_all.sh installs): the
    status names equal the reference verifier's."""
    import os

    prefix = os.environ.get("FWA_C_PREFIX")
    if not prefix:
        pytest.skip("FWA_C_PREFIX (an installed C package) is not set")
    from fwassist._cffi import CLibrary

    libs = sorted(Path(prefix).glob("lib*/libfwassist.so"))
    assert libs, f"no libfwassist.so under {prefix}"
    c = CLibrary(str(libs[0]))
    ffi, lib = c.ffi, c.lib
    # One set of release statuses: the C codes 50..59 (+ cap_exceeded, shared with the artifact
    # reader) are the names fwassist.ReleaseError documents and the reference raises.
    names = {c.status_name(s) for s in range(50, 60)} | {c.status_name(lib.FWA_ERR_CAP_EXCEEDED)}
    doc = " ".join((ReleaseError.__doc__ or "").split())
    assert all(f"``{n}``" in doc for n in names), (names, doc)
    for case in write_cases(tmp_path, models):
        d = tmp_path / case["dir"]
        counter_path = d / "counter" if case["counter"] else zero_counter(d)
        policy = ffi.from_buffer((d / "policy.json").read_bytes())
        sig = ffi.from_buffer((d / "model.fwa.sig").read_bytes())
        path = ffi.new("char[]", os.fsencode(counter_path))
        counter = ffi.new("fwa_counter*")
        lib.fwa_counter_init(counter)
        counter.path = path
        trust = ffi.new("fwa_trust*")
        lib.fwa_trust_init(trust)
        trust.policy, trust.policy_size = policy, len(policy)
        trust.signatures, trust.signatures_size = sig, len(sig)
        trust.counter = counter
        opts = ffi.new("fwa_open_options*")
        lib.fwa_open_options_init(opts)
        opts.trust = trust
        out = ffi.new("fwa_model**")
        st = lib.fwa_model_open_file(os.fsencode(d / "model.fwa"), opts, out)
        if st == lib.FWA_OK:
            lib.fwa_model_free(out[0])
        got = "ok" if st == lib.FWA_OK else c.status_name(st)
        assert got == python_status(d / "model.fwa", d / "model.fwa.sig", d / "policy.json",
                                    counter_path) == case["status"], case["name"]


# ---- signed policies -------------------------------------------------------------------


def python_signed_status(model: Path, policy: Path, policy_sig: Optional[Path],
                         roots: list[str], threshold: int, stored: Path) -> str:
    """The reference: verify_policy (the stored version read from the policy counter; an
    unreadable one is counter_unavailable after the signatures, as the core orders it), then
    verify with the policy it returned."""
    try:
        try:
            stored_version: Optional[int] = FileCounter(stored).read()
        except ReleaseError:
            stored_version = None
        pol = verify_policy(policy, policy_sig, roots, threshold=threshold,
                            stored_policy_version=stored_version)
        if stored_version is None:
            return "counter_unavailable"
        return verify(model, None, pol, FileCounter(zero_counter(model.parent))).status
    except (ReleaseError, ArtifactError) as e:
        return str(e.status)


def native_signed_status(model: Path, policy: Path, policy_sig: Optional[Path],
                         roots: list[str], threshold: int, stored: Path,
                         how: Optional[str]) -> str:
    try:
        m = Model.load(model)
        r = _trust.verify(m._native, str(model), policy, None, zero_counter(model.parent),
                          _trust.cryptography_verifier() if how == "callback" else None,
                          root_keys=roots, policy_signature=policy_sig, policy_counter=stored,
                          root_threshold=threshold)
    except (ReleaseError, ArtifactError) as e:
        return str(e.status)
    assert r.policy_signed and r.policy_counter == FileCounter(stored).read()
    return "ok"


def signed_both(model: Path, policy: Path, policy_sig: Optional[Path], roots: list[str],
                threshold: int, stored: Path) -> dict[str, str]:
    got = {"python": python_signed_status(model, policy, policy_sig, roots, threshold, stored)}
    for how in VERIFIERS:
        got[str(how)] = native_signed_status(model, policy, policy_sig, roots, threshold,
                                             stored, how)
    return got


class SignedPolicy:
    """Base's release with its policy (policy_version 3) signed by two root keys (P-256,
    Ed25519), a policy counter holding 3, and a stranger's key."""

    def __init__(self, d: Path, model: bytes) -> None:
        self.base = Base(d, model)
        self.root: PemSigner = generate_key("ecdsa-p256-sha256")[1]
        self.root2: PemSigner = generate_key("ed25519")[1]
        self.stranger: PemSigner = generate_key("ecdsa-p256-sha256")[1]
        self.roots = [self.root.public_key_pem, self.root2.public_key_pem]
        b = self.base
        self.raw = make_policy([("supplier", b.sup.public_key_pem),
                                ("oem", b.oem.public_key_pem)],
                               {"supplier": 1, "oem": 1}, policy_version=3)
        self.policy = d / "signed-policy.json"
        self.policy.write_bytes(self.raw)
        sign_policy(self.policy, self.root)
        sign_policy(self.policy, self.root2)
        self.sig = (d / "signed-policy.json.sig").read_bytes()
        self.stored = d / "policy-counter"
        FileCounter.init(self.stored, 3)

    def line(self, payload: bytes, signer: PemSigner, signature: Optional[bytes] = None) -> bytes:
        sig = signer.sign(pae(POLICY_PAYLOAD_TYPE, payload)) if signature is None else signature
        return render_bundle_line(POLICY_PAYLOAD_TYPE, payload, signer.keyid, sig) + b"\n"


def test_signed_policy_cases_agree(tmp_path: Path, models: tuple[bytes, bytes]) -> None:
    sp = SignedPolicy(tmp_path, models[0])
    b = sp.base
    d = tmp_path / "case"
    d.mkdir()
    other_root = generate_key("ed25519")[1].public_key_pem
    older = make_policy([("supplier", b.sup.public_key_pem), ("oem", b.oem.public_key_pem)],
                        {"supplier": 1, "oem": 1}, policy_version=2)
    edited = make_policy([("supplier", b.sup.public_key_pem), ("oem", b.oem.public_key_pem)],
                         {"supplier": 1, "oem": 1}, policy_version=3, min_security_version=9)
    cases: list[tuple[str, bytes, Optional[bytes], list[str], int, Optional[int], str]] = [
        # name, policy bytes, its .sig (None: no file), roots, threshold, stored, status
        ("good", sp.raw, sp.sig, sp.roots, 2, 3, "ok"),
        ("good, one root needed, other listed", sp.raw, sp.sig, [sp.roots[1], other_root], 1,
         1, "ok"),
        ("tampered policy", edited, sp.sig, sp.roots, 1, 3, "subject_mismatch"),
        ("wrong root", sp.raw, sp.sig, [other_root], 1, 3, "untrusted"),
        ("stranger's signature", sp.raw, sp.line(sp.raw, sp.stranger), sp.roots, 1, 3,
         "untrusted"),
        ("one root of two", sp.raw, sp.line(sp.raw, sp.root), sp.roots, 2, 3, "untrusted"),
        ("forged root signature", sp.raw,
         sp.line(sp.raw, sp.root, sp.root.sign(b"other bytes")) + sp.line(sp.raw, sp.root2),
         sp.roots, 1, 3, "signature_invalid"),
        ("lower policy_version", older,
         sp.line(older, sp.root) + sp.line(older, sp.root2), sp.roots, 1, 3, "rollback"),
        ("missing signature file", sp.raw, None, sp.roots, 1, 3, "signature_malformed"),
        ("a release's signatures", sp.raw, b.sig, sp.roots, 1, 3, "signature_malformed"),
        ("truncated", sp.raw, sp.sig[:-1], sp.roots, 1, 3, "signature_malformed"),
        ("policy counter missing", sp.raw, sp.sig, sp.roots, 1, None, "counter_unavailable"),
    ]
    for name, raw, sig, roots, threshold, stored, want in cases:
        pol = d / "policy.json"
        pol.write_bytes(raw)
        psig = d / "policy.json.sig"
        psig.unlink(missing_ok=True)
        if sig is not None:
            psig.write_bytes(sig)
        counter = d / "policy-counter"
        counter.unlink(missing_ok=True)
        if stored is not None:
            FileCounter.init(counter, stored)
        model = d / "model.fwa"
        if not model.exists():
            model.write_bytes(b.model.read_bytes())
            (d / "model.fwa.sig").write_bytes(b.sig)
        got = signed_both(model, pol, psig if sig is not None else None, roots, threshold,
                          counter)
        assert set(got.values()) == {want}, (name, got)
    # The release checks still follow a signed policy: an untrusted release is refused.
    (d / "model.fwa.sig").write_bytes(b.resign(b.payload, [sp.stranger]))
    got = signed_both(d / "model.fwa", sp.policy, None, sp.roots, 1, sp.stored)
    assert set(got.values()) == {"untrusted"}, got


def test_signed_policy_mutations_agree(tmp_path: Path, models: tuple[bytes, bytes]) -> None:
    """Seeded mutations of the policy's signature file (flips, truncations, line edits, JSON
    edits) and of the policy (re-signed edits): the same status from both verifiers."""
    sp = SignedPolicy(tmp_path, models[0])
    rng = random.Random(SEED + 17)
    pol, psig = tmp_path / "m-policy.json", tmp_path / "m-policy.json.sig"
    seen: dict[str, int] = {}
    disagreements = []
    for n in range(60):
        raw, sig = sp.raw, sp.sig
        op = n % 5
        if op == 0:
            sig = _flip(rng, sig)
        elif op == 1:
            sig = sig[:rng.randrange(len(sig))]
        elif op == 2:
            lines = sig.splitlines(keepends=True)
            i = rng.randrange(len(lines))
            lines[i] = canonical(_json_edit(rng, json.loads(lines[i]))) + b"\n"
            sig = b"".join(lines)
        elif op == 3:
            j = json.loads(raw)
            k = rng.choice(["policy_version", "min_security_version"])
            j[k] = rng.choice([1, 2, 3, 4, 0])
            raw = json.dumps(j).encode()
            signers = rng.choice([[sp.root], [sp.root2], [sp.root, sp.root2], [sp.stranger]])
            sig = b"".join(sp.line(raw, s) for s in signers)
        else:
            raw = _flip(rng, raw)
        pol.write_bytes(raw)
        psig.write_bytes(sig)
        got = signed_both(sp.base.model, pol, psig, sp.roots, rng.choice([1, 2]), sp.stored)
        if len(set(got.values())) != 1:
            disagreements.append((n, got))
        seen[got["python"]] = seen.get(got["python"], 0) + 1
    assert not disagreements, "\n".join(map(str, disagreements))
    assert {"ok", "signature_malformed", "untrusted", "rollback", "policy_malformed"} <= \
        set(seen), seen
