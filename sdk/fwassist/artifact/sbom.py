# SPDX-License-Identifier: Apache-2.0
"""The CycloneDX 1.6 ML-BOM embedded in every artifact (docs/artifact-format.md §3.7).

The BOM describes one component, the quantized model (``metadata.component``, type
``machine-learning-model``) with

* ``hashes``: SHA-256 = ``sections.tensors``, the digest of the tensor table, which binds every
  tensor's name, shape, quantization, offset and sha256. The artifact pin cannot appear here:
  the BOM is part of the manifest the pin is the digest of;
* ``modelCard`` from the artifact's model card: ``considerations.technicalLimitations`` =
  ``known_limitations`` (required non-empty), plus the optional keys mapped below;
* ``pedigree.ancestors``: the source checkpoint (name, SHA-256 of the imported file);
* ``properties``: the format, the quantization formats used and the digest of every other
  manifest section (``fwassist:section:<name>``).

It is deterministic: no timestamp, and ``serialNumber`` is the UUIDv5 (URL namespace) of
``"fwassist.artifact:" + sha256(canonical JSON of the sections object without "sbom")``, so
the same content always gives the same BOM and any change to another section gives a new
serial number.

Model card keys (all optional except ``known_limitations``; every key is also kept verbatim in
the manifest's ``model_card`` section):

=========================  ==============================================================
``name``, ``version``       component name and version (default: source name, none)
``description``             component description
``license``                 SPDX license expression
``supplier``                supplier organisation name
``task``                    ``modelParameters.task`` (default ``"text-generation"``)
``approach``                learning type (``supervised``, ``self-supervised``, ...)
``datasets``                list of ``{"name", "description"?, "url"?, "licenses"?,
                            "sha256"?, "files"?, "sources"?}``: each a ``data`` component in
                            ``components`` (licenses as SPDX ids, SHA-256 of its manifest,
                            file count and source packages as properties), referenced from
                            ``modelParameters.datasets``
``users``, ``use_cases``    lists of strings
``performance_tradeoffs``   list of strings
``ethical_considerations``  list of ``{"name", "mitigation"}``
``metrics``                 list of ``{"type", "value", "slice"?}`` (values as strings)
=========================  ==============================================================
"""

from __future__ import annotations

import uuid
from typing import Any, Mapping

from . import canonical

__all__ = ["build_sbom", "serial_number", "SPEC_VERSION"]

SPEC_VERSION = "1.6"
_SERIAL_PREFIX = "fwassist.artifact:"


def serial_number(sections_without_sbom: Mapping[str, str]) -> str:
    """``urn:uuid:`` + UUIDv5(URL namespace, prefix + digest of the other sections)."""
    if "sbom" in sections_without_sbom:
        raise ValueError("the serial number is derived from the sections other than sbom")
    h = canonical.digest(dict(sections_without_sbom))
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, _SERIAL_PREFIX + h))


def _strings(card: Mapping[str, Any], key: str) -> list[str]:
    v = card.get(key)
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) for s in v):
        raise ValueError(f"model_card.{key} must be a string or a list of strings")
    return list(v)


def _opt_str(card: Mapping[str, Any], key: str) -> str | None:
    v = card.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        raise ValueError(f"model_card.{key} must be a non-empty string")
    return v


def dataset_components(card: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One CycloneDX ``data`` component per model card dataset (bom-ref ``dataset-<i>``)."""
    out = []
    for i, d in enumerate(card.get("datasets") or []):
        if not isinstance(d, Mapping) or not isinstance(d.get("name"), str):
            raise ValueError(f"model_card.datasets[{i}] must be an object with a string name")
        data: dict[str, Any] = {"type": "dataset", "name": d["name"]}
        comp: dict[str, Any] = {"type": "data", "bom-ref": f"dataset-{i}", "name": d["name"]}
        if d.get("description"):
            data["description"] = comp["description"] = str(d["description"])
        if d.get("url"):
            data["contents"] = {"url": str(d["url"])}
        lic = d.get("licenses")
        if lic is not None:
            if not isinstance(lic, list) or not all(isinstance(x, str) and x for x in lic):
                raise ValueError(f"model_card.datasets[{i}].licenses must be a list of SPDX "
                                 f"ids")
            comp["licenses"] = [{"license": {"id": x}} for x in lic]
        if d.get("sha256") is not None:
            h = d["sha256"]
            if not (isinstance(h, str) and len(h) == 64
                    and all(ch in "0123456789abcdef" for ch in h)):
                raise ValueError(f"model_card.datasets[{i}].sha256 must be 64 lowercase hex "
                                 f"digits")
            comp["hashes"] = [{"alg": "SHA-256", "content": h}]
        props = []
        if d.get("files") is not None:
            props.append({"name": "fwassist:dataset:files", "value": str(int(d["files"]))})
        for src in _strings(d, "sources"):
            props.append({"name": "fwassist:dataset:source", "value": src})
        if props:
            comp["properties"] = props
        comp["data"] = [data]
        out.append(comp)
    return out


def _model_card(card: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {
        "task": _opt_str(card, "task") or "text-generation",
        "architectureFamily": "transformer",
        "modelArchitecture": str(config.get("architecture", "unknown")),
        "inputs": [{"format": "text"}],
        "outputs": [{"format": "text"}],
    }
    approach = _opt_str(card, "approach")
    if approach:
        params["approach"] = {"type": approach}
    datasets = [{"ref": c["bom-ref"]} for c in dataset_components(card)]
    if datasets:
        params["datasets"] = datasets

    considerations: dict[str, Any] = {"technicalLimitations": _strings(card, "known_limitations")}
    for key, field in (("users", "users"), ("use_cases", "useCases"),
                       ("performance_tradeoffs", "performanceTradeoffs")):
        vals = _strings(card, key)
        if vals:
            considerations[field] = vals
    risks = []
    for i, r in enumerate(card.get("ethical_considerations") or []):
        if not isinstance(r, Mapping) or not isinstance(r.get("name"), str):
            raise ValueError(f"model_card.ethical_considerations[{i}] needs a string name")
        risk = {"name": r["name"]}
        if r.get("mitigation"):
            risk["mitigationStrategy"] = str(r["mitigation"])
        risks.append(risk)
    if risks:
        considerations["ethicalConsiderations"] = risks

    out: dict[str, Any] = {"modelParameters": params, "considerations": considerations}
    metrics = []
    for i, m in enumerate(card.get("metrics") or []):
        if not isinstance(m, Mapping) or "type" not in m or "value" not in m:
            raise ValueError(f"model_card.metrics[{i}] needs type and value")
        metric = {"type": str(m["type"]), "value": str(m["value"])}
        if m.get("slice"):
            metric["slice"] = str(m["slice"])
        metrics.append(metric)
    if metrics:
        out["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    return out


def build_sbom(*, config: Mapping[str, Any], model_card: Mapping[str, Any],
               source_name: str, source_sha256: str, exporter_version: str,
               quant_formats: list[str], sections: Mapping[str, str]) -> dict[str, Any]:
    """The BOM as a JSON-ready dict. ``sections``: the digests of every section but sbom.
    ``model_card`` and ``config`` are the normalized (float-free) manifest values."""
    limitations = _strings(model_card, "known_limitations")
    if not limitations or not all(s.strip() for s in limitations):
        raise ValueError("model_card.known_limitations must be a non-empty list of non-empty "
                         "strings")
    name = _opt_str(model_card, "name") or source_name or "model"
    component: dict[str, Any] = {
        "type": "machine-learning-model",
        "bom-ref": "model",
        "name": name,
        "hashes": [{"alg": "SHA-256", "content": sections["tensors"]}],
    }
    version = _opt_str(model_card, "version")
    if version:
        component["version"] = version
    description = _opt_str(model_card, "description")
    if description:
        component["description"] = description
    supplier = _opt_str(model_card, "supplier")
    if supplier:
        component["supplier"] = {"name": supplier}
    license_ = _opt_str(model_card, "license")
    if license_:
        component["licenses"] = [{"expression": license_}]
    component["pedigree"] = {"ancestors": [{
        "type": "machine-learning-model",
        "bom-ref": "source-checkpoint",
        "name": source_name or "source checkpoint",
        "hashes": [{"alg": "SHA-256", "content": source_sha256}],
        "description": "the checkpoint the artifact was exported from; SHA-256 of the "
                       "imported file (and its external data, in order)",
    }]}
    component["modelCard"] = _model_card(model_card, config)
    props = [
        {"name": "fwassist:format", "value": "fwassist.artifact 1.0"},
        {"name": "fwassist:hash-scope",
         "value": "SHA-256 of the canonical JSON of the manifest's tensors section"},
    ]
    props += [{"name": "fwassist:quantization", "value": q} for q in quant_formats]
    props += [{"name": f"fwassist:section:{k}", "value": sections[k]} for k in sorted(sections)]
    component["properties"] = props
    bom: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": serial_number(sections),
        "version": 1,
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "fwassist",
                                      "version": exporter_version}]},
            "component": component,
        },
    }
    data = dataset_components(model_card)
    if data:
        bom["components"] = data
    return bom
