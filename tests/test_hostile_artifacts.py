# SPDX-License-Identifier: Apache-2.0
"""Tampering that keeps every size intact: swapped equal-size tensors, renamed tensors and
reordered tables, with and without re-sealing the manifest. Without re-sealing the digests
catch it; a re-sealed file is a different artifact, and the pin catches it."""

from __future__ import annotations

import hashlib

import pytest

from fwassist import ArtifactError, load_artifact

import artifact_fixtures as fx

GATE0 = "model.layers.0.mlp.experts.0.gate_proj.weight"
UP0 = "model.layers.0.mlp.experts.0.up_proj.weight"


@pytest.fixture(scope="module")
def blob() -> bytes:
    return fx.build(fx.small_tensors(seed=11))


def pin_of(blob: bytes) -> str:
    m_len = int.from_bytes(blob[16:24], "little")
    return "sha256:" + hashlib.sha256(blob[128:128 + m_len]).hexdigest()


def data_offset(blob: bytes) -> int:
    return int.from_bytes(blob[24:32], "little")


def entries(blob: bytes) -> dict:
    m, _ = fx.split(blob)
    return {e["name"]: e for e in m["tensors"]}


def status_of(source, **kw) -> str:
    with pytest.raises(ArtifactError) as ei:
        load_artifact(source, **kw)
    return ei.value.status, ei.value.message


def swap_bytes(blob: bytes, a: dict, b: dict) -> bytes:
    assert a["length"] == b["length"]
    d0, out = data_offset(blob), bytearray(blob)
    sa, sb = d0 + a["offset"], d0 + b["offset"]
    out[sa:sa + a["length"]], out[sb:sb + b["length"]] = blob[sb:sb + b["length"]], \
        blob[sa:sa + a["length"]]
    return bytes(out)


@pytest.mark.parametrize("lazy", [False, True])
def test_swapped_equal_size_tensors_are_rejected(blob: bytes, lazy: bool):
    t = entries(blob)
    bad = swap_bytes(blob, t[GATE0], t[UP0])
    if lazy:  # expert weights: found when the expert is first verified
        art = load_artifact(bad, lazy=True)
        with pytest.raises(ArtifactError) as ei:
            art.verify_expert(0, 0)
        status, msg = ei.value.status, ei.value.message
    else:
        status, msg = status_of(bad)
    assert status == "digest_mismatch"
    assert GATE0 in msg or UP0 in msg


def test_swap_with_resealed_table_is_a_different_artifact(blob: bytes):
    t = entries(blob)
    swapped = swap_bytes(blob, t[GATE0], t[UP0])

    def edit(m: dict) -> None:
        ta = next(e for e in m["tensors"] if e["name"] == GATE0)
        tb = next(e for e in m["tensors"] if e["name"] == UP0)
        ta["sha256"], tb["sha256"] = tb["sha256"], ta["sha256"]

    m, data = fx.split(swapped)
    edit(m)
    for b in m["expert_blocks"]:  # the forger re-hashes the blocks too
        b["sha256"] = hashlib.sha256(data[b["offset"]:b["offset"] + b["length"]]).hexdigest()
    forged = fx.assemble(m, data)
    assert load_artifact(forged).pin != pin_of(blob)
    assert status_of(forged, pin=pin_of(blob))[0] == "pin_mismatch"


def test_renamed_tensor(blob: bytes):
    m, data = fx.split(blob)
    next(e for e in m["tensors"] if e["name"] == UP0)["name"] = UP0.replace("up_", "upx_")
    forged = fx.assemble(m, data)
    # Sealed again: structurally valid, but not the pinned artifact.
    assert status_of(forged, pin=pin_of(blob))[0] == "pin_mismatch"
    # Renamed in place without re-sealing: the manifest digest no longer matches the header.
    raw = bytearray(blob)
    i = raw.index(b'"' + UP0.encode() + b'"')
    raw[i + 1 + UP0.index("up_")] = ord("U")
    assert status_of(bytes(raw))[0] == "digest_mismatch"


def test_reordered_table_is_malformed(blob: bytes):
    m, data = fx.split(blob)
    m["tensors"][0], m["tensors"][1] = m["tensors"][1], m["tensors"][0]
    assert status_of(fx.assemble(m, data))[0] == "malformed"
