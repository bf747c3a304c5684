# SPDX-License-Identifier: Apache-2.0
"""The release subcommands of the ``fwassist`` command line (docs/releases.md): ``sign``,
``sign-policy``, ``keygen``, ``pubkey``, ``trust-policy`` and ``counter``. :func:`register` adds them to the
main parser's subparsers; each sets ``fn(args) -> exit code``.

Exit codes as every command: 0 done, 1 the work failed (a missing extra, a file system error),
2 bad usage or input, 3 an invalid artifact or a refused release (``ReleaseError``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional

from ..textsafe import printable

__all__ = ["register"]


def _signer(args: argparse.Namespace) -> Any:
    """The signer the options name: a PEM file, a PKCS#11 URI, or module + labels + PIN file."""
    from ..release.keys import load_signer

    hsm = [args.pkcs11_module, args.token_label, args.key_label, args.pin_file]
    named = [args.key is not None, args.pkcs11_uri is not None,
             any(x is not None for x in hsm)]
    if sum(named) != 1:
        raise ValueError("name exactly one key: --key KEY.pem, --pkcs11-uri URI, or "
                         "--pkcs11-module with --token-label, --key-label and --pin-file")
    if args.key is not None:
        password = None
        if args.key_password_file is not None:
            with open(args.key_password_file, "rb") as f:
                password = f.read(4096).rstrip(b"\n")
        return load_signer(args.key, password)
    from ..release.pkcs11 import Pkcs11Key, Pkcs11Signer, parse_uri, read_pin_file

    if args.pkcs11_uri is not None:
        return Pkcs11Signer(parse_uri(args.pkcs11_uri))
    if any(x is None for x in hsm):
        raise ValueError("--pkcs11-module needs --token-label, --key-label and --pin-file")
    return Pkcs11Signer(Pkcs11Key(args.pkcs11_module, args.token_label, args.key_label, None,
                                  read_pin_file(args.pin_file)))


def _cmd_sign(args: argparse.Namespace) -> int:
    from ..outpath import check_input_file, check_output_file
    from ..release import sign
    from ..release._formats import check_rxswin

    check_input_file(args.model, "model")
    check_rxswin(args.rxswin)
    sig = args.output if args.output is not None else args.model + ".sig"
    if os.path.lexists(sig):
        check_output_file(sig, "-o", [args.model], append=True)
    else:
        check_output_file(sig, "-o", [args.model])
    ms_out: Optional[str] = None
    if args.model_signing is not None:
        ms_out = args.model_signing or args.model + ".sigstore.json"
        check_output_file(ms_out, "--model-signing", [args.model, sig], force=args.force)
    signer = _signer(args)
    if ms_out is not None and signer.algorithm != "ecdsa-p256-sha256":
        raise ValueError("--model-signing: model-signing's key mode verifies EC keys only; "
                         "sign with an ECDSA P-256 key")
    res = sign(args.model, signer, args.security_version, args.rxswin, sig)
    st = res.statement
    assert st is not None
    print(f"signed {st.pin} security_version {st.security_version} rxswin "
          f"{printable(st.rxswin) if st.rxswin is not None else '(none)'}")
    print(f"  key {res.keyid} ({signer.algorithm}); {res.signers} signer(s) in "
          f"{printable(res.sig_path)}")
    if ms_out is not None:
        from ..release.model_signing import write_model_signing

        write_model_signing(args.model, signer, ms_out)
        print(f"  model-signing form: {printable(ms_out)}")
    return 0


def _cmd_sign_policy(args: argparse.Namespace) -> int:
    from ..outpath import check_input_file, check_output_file
    from ..release import sign_policy

    check_input_file(args.policy, "policy")
    sig = args.output if args.output is not None else args.policy + ".sig"
    check_output_file(sig, "-o", [args.policy], append=os.path.lexists(sig))
    res = sign_policy(args.policy, _signer(args), sig)
    print(f"signed policy {printable(args.policy)} with root key {res.keyid}; {res.signers} "
          f"signer(s) in {printable(res.sig_path)}")
    return 0


def _pub_path(key_path: str) -> str:
    base = key_path[:-4] if key_path.endswith(".pem") else key_path
    return base + ".pub.pem"


_ALGORITHMS = {"ecdsa-p256": "ecdsa-p256-sha256", "ed25519": "ed25519"}


def _cmd_keygen(args: argparse.Namespace) -> int:
    from ..outpath import check_output_file, write_text_atomic
    from ..release.keys import generate_key, write_private_key

    pub = _pub_path(args.output)
    check_output_file(args.output, "-o", [])
    check_output_file(pub, "public key", [])
    pem, signer = generate_key(_ALGORITHMS[args.algorithm])
    write_private_key(args.output, pem)
    write_text_atomic(pub, signer.public_key_pem)
    print(f"{signer.algorithm} key {signer.keyid}")
    print(f"  private: {printable(args.output)} (0600)  public: {printable(pub)}")
    return 0


def _cmd_pubkey(args: argparse.Namespace) -> int:
    from ..outpath import check_output_file, write_text_atomic

    if args.output is not None:
        check_output_file(args.output, "-o", [args.key], force=args.force)
    signer = _signer(args)
    if args.output is None:
        sys.stdout.write(signer.public_key_pem)
    else:
        write_text_atomic(args.output, signer.public_key_pem)
    print(f"{signer.algorithm} key {signer.keyid}", file=sys.stderr)
    return 0


def _pair(s: str) -> tuple[str, str]:
    name, eq, value = s.partition("=")
    if not eq or not name or not value:
        raise argparse.ArgumentTypeError(f"{s!r} is not ROLE=VALUE")
    return name, value


def _cmd_trust_policy(args: argparse.Namespace) -> int:
    from ..outpath import check_output_file, write_text_atomic
    from ..release import make_policy
    from ..release.keys import load_public_key, public_key_info

    check_output_file(args.output, "-o", [], force=args.force)
    keys = []
    for role, path in args.key:
        with open(path, "rb") as f:
            pem = f.read(1 << 16).decode("ascii", "replace")
        try:
            load_public_key(pem)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        keys.append((role, pem))
    required: dict[str, int] = {}
    for role, n in args.require or [(r, "1") for r, _ in args.key]:
        try:
            required[role] = int(n, 10)
        except ValueError:
            raise ValueError(f"--require {role}={n}: not an integer") from None
    revoked = []
    for r in args.revoke or []:
        if os.path.isfile(r):
            with open(r, "rb") as f:
                revoked.append(public_key_info(load_public_key(f.read(1 << 16)))[0])
        else:
            revoked.append(r)
    raw = make_policy(keys, required, policy_version=args.policy_version,
                      min_security_version=args.min_security_version, revoked_keyids=revoked)
    write_text_atomic(args.output, raw.decode("utf-8"))
    print(f"policy version {args.policy_version}: {len(keys)} key(s), requires "
          + " and ".join(f"{n} {printable(r)}" for r, n in sorted(required.items()))
          + f", minimum security version {args.min_security_version}: "
          + printable(args.output))
    return 0


def _cmd_counter(args: argparse.Namespace) -> int:
    from ..release import FileCounter

    if args.action == "init":
        FileCounter.init(args.file, args.value if args.value is not None else 0)
        print(f"counter {printable(args.file)} = {FileCounter(args.file).read()}")
        return 0
    counter = FileCounter(args.file)
    if args.action == "read":
        print(counter.read())
        return 0
    if (args.value is None) == (args.release is None):
        raise ValueError("counter advance needs --value N or --release MODEL.fwa --trust "
                         "POLICY")
    if args.release is not None:
        from ..release import verify

        if args.trust is None:
            raise ValueError("--release needs --trust POLICY")
        verdict = verify(args.release, args.sig, args.trust, counter)
        assert verdict.security_version is not None
        value = verdict.security_version
    else:
        value = args.value
    before = counter.read()
    after = counter.advance(value)
    print(f"counter {printable(args.file)}: {before} -> {after}")
    return 0


def _key_options(p: argparse.ArgumentParser) -> None:
    from . import input_file

    g = p.add_argument_group("the signing key (exactly one)")
    g.add_argument("--key", type=input_file, metavar="KEY.pem",
                   help="PEM private key (ECDSA P-256 or Ed25519)")
    g.add_argument("--key-password-file", type=input_file, metavar="FILE",
                   help="the password of an encrypted --key")
    g.add_argument("--pkcs11-uri", metavar="URI",
                   help="RFC 7512 URI of a key in a PKCS#11 token, e.g. "
                        "'pkcs11:token=T;object=K?module-path=LIB&pin-source=file:PIN'")
    g.add_argument("--pkcs11-module", type=input_file, metavar="LIB.so",
                   help="PKCS#11 library (with --token-label, --key-label, --pin-file)")
    g.add_argument("--token-label", metavar="LABEL")
    g.add_argument("--key-label", metavar="LABEL")
    g.add_argument("--pin-file", type=input_file, metavar="FILE",
                   help="file holding the token's user PIN on one line")


def register(subparsers: Any) -> None:
    """Adds ``sign``, ``sign-policy``, ``keygen``, ``pubkey``, ``trust-policy`` and
    ``counter``."""
    from . import input_file, int_range

    p = subparsers.add_parser(
        "sign", help="sign a release of an artifact (adds one signer to MODEL.fwa.sig)",
        description="Writes MODEL.fwa.sig, or adds one more signer to it: a Sigstore bundle "
                    "around a DSSE envelope over the release statement (the artifact's pin, "
                    "security version, RXSWIN, model-card digest). Co-signers sign the same "
                    "statement. See docs/releases.md.")
    p.add_argument("model", metavar="MODEL.fwa")
    p.add_argument("--security-version", type=int_range(0, 1 << 53), required=True,
                   metavar="N", help="the anti-rollback version of this release")
    p.add_argument("--rxswin", metavar="ID", help="software identification (UN R156 RXSWIN), "
                                                  "1..128 printable ASCII characters")
    p.add_argument("-o", "--output", metavar="SIG", help="signature file (default MODEL.fwa.sig)")
    p.add_argument("--model-signing", nargs="?", const="", metavar="PATH",
                   help="also write the OpenSSF model-signing form (default "
                        "MODEL.fwa.sigstore.json; ECDSA P-256 keys)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --model-signing file")
    _key_options(p)
    p.set_defaults(fn=_cmd_sign)

    p = subparsers.add_parser(
        "sign-policy", help="sign a trust policy with a root key (adds one signer to "
                            "policy.json.sig)")
    p.add_argument("policy", metavar="policy.json")
    p.add_argument("-o", "--output", metavar="SIG", help="signature file (default "
                                                         "policy.json.sig)")
    _key_options(p)
    p.set_defaults(fn=_cmd_sign_policy)

    p = subparsers.add_parser("keygen", help="generate a signing key (PEM, 0600) and its "
                                             "public key (.pub.pem)")
    p.add_argument("--algorithm", choices=tuple(_ALGORITHMS), default="ecdsa-p256")
    p.add_argument("-o", "--output", required=True, metavar="KEY.pem")
    p.set_defaults(fn=_cmd_keygen)

    p = subparsers.add_parser("pubkey", help="print (or write) the public key of a signing "
                                             "key, PEM file or PKCS#11 token")
    p.add_argument("-o", "--output", metavar="PUB.pem")
    p.add_argument("--force", action="store_true", help="replace an existing -o file")
    _key_options(p)
    p.set_defaults(fn=_cmd_pubkey)

    p = subparsers.add_parser("trust-policy", help="write a trust policy from public keys and "
                                                   "roles")
    p.add_argument("--key", type=_pair, action="append", required=True, metavar="ROLE=PUB.pem",
                   help="a trusted public key and its role (repeat)")
    p.add_argument("--require", type=_pair, action="append", metavar="ROLE=N",
                   help="distinct valid signers the role needs (repeat; default: 1 for every "
                        "role of --key)")
    p.add_argument("--revoke", action="append", metavar="KEYID|PUB.pem",
                   help="a revoked key (repeat)")
    p.add_argument("--policy-version", type=int_range(1, 1 << 53), default=1, metavar="N")
    p.add_argument("--min-security-version", type=int_range(0, 1 << 53), default=0,
                   metavar="N")
    p.add_argument("-o", "--output", required=True, metavar="policy.json")
    p.add_argument("--force", action="store_true", help="replace an existing -o file")
    p.set_defaults(fn=_cmd_trust_policy)

    p = subparsers.add_parser(
        "counter", help="the file-based anti-rollback counter: init, read, advance",
        description="A file holding the decimal value and a newline. 'init' creates it (never "
                    "over an existing one); 'advance' raises it, after a successful boot of "
                    "the new release, and never lowers it.")
    p.add_argument("action", choices=("init", "read", "advance"))
    p.add_argument("file", metavar="FILE")
    p.add_argument("--value", type=int_range(0, 1 << 53), metavar="N",
                   help="init: the first value (default 0); advance: the new value")
    p.add_argument("--release", type=input_file, metavar="MODEL.fwa",
                   help="advance: to this release's security version, verified first")
    p.add_argument("--trust", type=input_file, metavar="policy.json",
                   help="advance --release: the trust policy")
    p.add_argument("--sig", type=input_file, metavar="SIG",
                   help="advance --release: the signature file (default MODEL.fwa.sig)")
    p.set_defaults(fn=_cmd_counter)
