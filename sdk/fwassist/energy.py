# SPDX-License-Identifier: Apache-2.0
"""Energy and carbon accounting for inference runs (docs/energy.md). Standard library only.

Three parts, each usable alone:

* **model**: :func:`estimate` turns an :class:`Activity` (thread-pool core-seconds, process CPU
  time, weight bytes read, tokens) and a device :class:`Profile` (JSON, every parameter with a
  unit, a provenance and a source) into joules, split into static, core and memory terms;
* **measurement**: :class:`EnergyMeter` reads Linux RAPL counters (powercap ``energy_uj``) or
  hwmon ``energy*_input`` counters before and after a run. It returns ``None`` joules, with the
  reason, when the platform has no counters or they cannot be read (they are root-only on most
  kernels);
* **report**: :func:`sci_report` computes the Green Software Foundation Software Carbon
  Intensity, SCI = (E·I + M) / R, per 1,000 generated tokens and per 1,000 generated lines of
  code. The result can be written as JSON or as a CodeCarbon ``emissions.csv`` row.

Nothing here imports the compiled core; the module can be used on a machine without it.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import platform
import re
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

__all__ = [
    "PROVENANCES", "PARAMETERS", "SCI_SPEC", "CODECARBON_COLUMNS", "CODECARBON_SCHEMA",
    "J_PER_KWH", "joules_to_kwh", "kwh_to_joules", "pj_per_bit_to_j_per_byte",
    "Parameter", "Profile", "load_profile", "available_profiles",
    "Activity", "EnergyEstimate", "estimate",
    "EnergyDomain", "EnergyReading", "EnergyMeter", "rapl_domains", "hwmon_domains",
    "RunInfo", "SciReport", "sci_report",
]

PathLike = Union[str, "os.PathLike[str]"]

# ---------------------------------------------------------------------------------------------
# Units

J_PER_KWH = 3.6e6
"""Joules in one kilowatt-hour (1000 W × 3600 s)."""


def _amount(name: str, value: Any) -> float:
    """``value`` as a float; ValueError unless it is a finite number >= 0 (an energy figure
    that is NaN or negative is an error, never a NaN report)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
    return float(value)


def joules_to_kwh(joules: float) -> float:
    """Energy in kWh from joules (÷ 3.6e6)."""
    return _amount("joules", joules) / J_PER_KWH


def kwh_to_joules(kwh: float) -> float:
    """Energy in joules from kWh (× 3.6e6)."""
    return _amount("kwh", kwh) * J_PER_KWH


def pj_per_bit_to_j_per_byte(pj_per_bit: float) -> float:
    """A DRAM figure in pJ/bit as J/byte (× 8 bits, × 1e-12): 20 pJ/bit -> 1.6e-10 J/byte."""
    return _amount("pj_per_bit", pj_per_bit) * 8.0 * 1e-12


# ---------------------------------------------------------------------------------------------
# Device profiles

PROVENANCES = ("measured", "datasheet", "literature", "placeholder")
"""Where a parameter's value comes from. ``placeholder`` means a guess to be replaced."""

PARAMETERS: Mapping[str, Tuple[str, bool]] = {
    # id: (unit, required)
    "idle_power": ("W", True),             # static power of the boundary, all cores idle
    "core_busy_power": ("W", True),        # per core running work, above idle
    "core_spin_power": ("W", True),        # per core spin-waiting, above idle
    "core_parked_power": ("W", True),      # per worker blocked (futex), above idle
    "dram_energy_per_byte": ("J/byte", True),  # per byte of weights read from DRAM
    "embodied_emissions": ("kgCO2e", False),   # device life-cycle emissions (SCI TE)
    "lifetime": ("h", False),              # expected device lifetime (SCI EL)
}
"""Profile parameters, their required unit, and whether a profile must have them."""

PROFILE_SCHEMA = "fwassist-energy-profile/1"
_PARAM_FIELDS = ("value", "unit", "provenance", "source")
_PROFILE_KEYS = ("schema", "name", "description", "parameters")
_MODEL_PARAMETERS = ("idle_power", "core_busy_power", "core_spin_power", "core_parked_power",
                     "dram_energy_per_byte")
_PROFILE_DIR = Path(__file__).resolve().parent / "energy_profiles"


@dataclass(frozen=True)
class Parameter:
    """One profile parameter: a finite value >= 0 in ``unit``, with provenance and source."""

    value: float
    unit: str
    provenance: str
    source: str


@dataclass(frozen=True)
class Profile:
    """A device's energy parameters (see :data:`PARAMETERS`), validated on construction."""

    name: str
    description: str
    parameters: Dict[str, Parameter]

    def get(self, pid: str) -> Optional[Parameter]:
        return self.parameters.get(pid)

    def value(self, pid: str) -> float:
        """The value of parameter ``pid`` (KeyError when the profile lacks it)."""
        return self.parameters[pid].value

    @property
    def placeholders(self) -> Tuple[str, ...]:
        """Ids of the parameters whose provenance is ``placeholder``."""
        return tuple(p for p, v in self.parameters.items() if v.provenance == "placeholder")

    @property
    def has_embodied(self) -> bool:
        return "embodied_emissions" in self.parameters and "lifetime" in self.parameters

    def to_dict(self) -> Dict[str, Any]:
        """The JSON file form (parameters in :data:`PARAMETERS` order)."""
        return {
            "schema": PROFILE_SCHEMA,
            "name": self.name,
            "description": self.description,
            "parameters": {pid: asdict(self.parameters[pid])
                           for pid in PARAMETERS if pid in self.parameters},
        }

    @classmethod
    def from_dict(cls, data: Any, origin: str = "<profile>") -> Profile:
        """Validate a decoded profile; errors are ValueError("<origin>: <field>: <problem>")."""
        return _validate_profile(data, origin)

    @classmethod
    def load(cls, path: PathLike) -> Profile:
        """Read and validate one profile JSON file."""
        origin = os.fspath(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"{origin}: cannot read profile: {e.strerror or e}") from None
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{origin}: not valid JSON: {e}") from None
        return _validate_profile(data, origin)


def available_profiles() -> List[str]:
    """Names of the profiles bundled with the package (``energy_profiles/<name>.json``)."""
    if not _PROFILE_DIR.is_dir():
        return []
    return sorted(p.stem for p in _PROFILE_DIR.glob("*.json"))


def load_profile(name_or_path: PathLike) -> Profile:
    """A bundled profile by name (e.g. ``"cortex-a76-rpi5"``) or a profile JSON file by path."""
    text = os.fspath(name_or_path)
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text) and not text.endswith(".json"):
        bundled = _PROFILE_DIR / f"{text}.json"
        if bundled.is_file():
            return Profile.load(bundled)
        if not Path(text).exists():
            raise ValueError(f"{text}: no such bundled profile (available: "
                             f"{', '.join(available_profiles()) or 'none'}) and no such file")
    return Profile.load(name_or_path)


def _validate_profile(data: Any, origin: str) -> Profile:
    if not isinstance(data, dict):
        raise ValueError(f"{origin}: a profile must be a JSON object")
    for key in data:
        if key not in _PROFILE_KEYS:
            raise ValueError(f"{origin}: {key}: unknown top-level field "
                             f"(allowed: {', '.join(_PROFILE_KEYS)})")
    if data.get("schema") != PROFILE_SCHEMA:
        raise ValueError(f"{origin}: schema: expected {PROFILE_SCHEMA!r}, "
                         f"got {data.get('schema')!r}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{origin}: name: must be a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"{origin}: description: must be a string")
    raw = data.get("parameters")
    if not isinstance(raw, dict):
        raise ValueError(f"{origin}: parameters: must be an object")
    for pid in raw:
        if pid not in PARAMETERS:
            raise ValueError(f"{origin}: parameters.{pid}: unknown parameter "
                             f"(known: {', '.join(PARAMETERS)})")
    params: Dict[str, Parameter] = {}
    for pid, (unit, required) in PARAMETERS.items():
        if pid not in raw:
            if required:
                raise ValueError(f"{origin}: parameters.{pid}: missing required parameter")
            continue
        params[pid] = _validate_parameter(raw[pid], unit, f"{origin}: parameters.{pid}")
    if ("embodied_emissions" in params) != ("lifetime" in params):
        raise ValueError(f"{origin}: parameters.embodied_emissions/lifetime: "
                         f"give both or neither")
    if "lifetime" in params and params["lifetime"].value <= 0:
        raise ValueError(f"{origin}: parameters.lifetime.value: must be > 0")
    return Profile(name=name, description=description, parameters=params)


def _validate_parameter(raw: Any, unit: str, where: str) -> Parameter:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be an object with fields {', '.join(_PARAM_FIELDS)}")
    for key in _PARAM_FIELDS:
        if key not in raw:
            raise ValueError(f"{where}.{key}: missing field")
    for key in raw:
        if key not in _PARAM_FIELDS:
            raise ValueError(f"{where}.{key}: unknown field")
    value = raw["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}.value: must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{where}.value: must be finite, got {value!r}")
    if value < 0:
        raise ValueError(f"{where}.value: must be >= 0, got {value!r}")
    if raw["unit"] != unit:
        raise ValueError(f"{where}.unit: must be {unit!r}, got {raw['unit']!r}")
    if raw["provenance"] not in PROVENANCES:
        raise ValueError(f"{where}.provenance: must be one of {', '.join(PROVENANCES)}, "
                         f"got {raw['provenance']!r}")
    source = raw["source"]
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"{where}.source: must be a non-empty string")
    return Parameter(value=float(value), unit=unit, provenance=raw["provenance"], source=source)


# ---------------------------------------------------------------------------------------------
# The model

def _check_amount(name: str, value: Any, integer: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Activity.{name}: must be a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise ValueError(f"Activity.{name}: must be an integer, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"Activity.{name}: must be finite and >= 0, got {value!r}")


@dataclass(frozen=True)
class Activity:
    """What a run did, as counted. Times in seconds; core-seconds are summed over threads.

    * ``wall_s``: wall-clock duration of the run (the SCI time reserved, and the static term);
    * ``busy_core_s`` / ``spin_core_s`` / ``parked_core_s``: thread-pool counters, core-seconds
      spent running work, spin-waiting, and blocked (parked) in the kernel;
    * ``process_cpu_s``: measured CPU time of the process (getrusage utime+stime, or procfs).
      The part not covered by ``busy + spin`` (main thread, tokenizer, Python) is charged at
      busy power; with no pool counters at all the whole process CPU time is;
    * ``weight_bytes_read``: bytes of weights the schedule read (dense + active experts);
    * ``prompt_tokens`` / ``generated_tokens``; ``generated_lines``: lines of code generated,
      or None when not counted;
    * ``idle_s``: part of ``wall_s`` with no request in flight (reported; the static term
      already covers it).
    """

    wall_s: float
    busy_core_s: float = 0.0
    spin_core_s: float = 0.0
    parked_core_s: float = 0.0
    process_cpu_s: float = 0.0
    weight_bytes_read: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    generated_lines: Optional[int] = None
    idle_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("wall_s", "busy_core_s", "spin_core_s", "parked_core_s", "process_cpu_s",
                     "idle_s"):
            _check_amount(name, getattr(self, name))
        for name in ("weight_bytes_read", "prompt_tokens", "generated_tokens"):
            _check_amount(name, getattr(self, name), integer=True)
        if self.generated_lines is not None:
            _check_amount("generated_lines", self.generated_lines, integer=True)
        if self.idle_s > self.wall_s:
            raise ValueError(f"Activity.idle_s: {self.idle_s} exceeds wall_s {self.wall_s}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Activity:
        return cls(**{k: data[k] for k in data})


@dataclass(frozen=True)
class EnergyEstimate:
    """Modelled energy in joules, by term (see :func:`estimate`).

    ``placeholders`` names the placeholder parameters that contributed (their input was > 0).
    """

    profile: str
    static_j: float
    busy_j: float
    spin_j: float
    parked_j: float
    other_cpu_j: float
    memory_j: float
    placeholders: Tuple[str, ...] = ()

    @property
    def cores_j(self) -> float:
        return self.busy_j + self.spin_j + self.parked_j + self.other_cpu_j

    @property
    def total_j(self) -> float:
        return self.static_j + self.cores_j + self.memory_j

    def to_dict(self) -> Dict[str, Any]:
        return {
            "profile": self.profile,
            "static_j": self.static_j,
            "busy_j": self.busy_j,
            "spin_j": self.spin_j,
            "parked_j": self.parked_j,
            "other_cpu_j": self.other_cpu_j,
            "memory_j": self.memory_j,
            "cores_j": self.cores_j,
            "total_j": self.total_j,
            "placeholders": list(self.placeholders),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnergyEstimate:
        return cls(profile=str(data["profile"]), static_j=float(data["static_j"]),
                   busy_j=float(data["busy_j"]), spin_j=float(data["spin_j"]),
                   parked_j=float(data["parked_j"]), other_cpu_j=float(data["other_cpu_j"]),
                   memory_j=float(data["memory_j"]),
                   placeholders=tuple(str(p) for p in data["placeholders"]))


def estimate(activity: Activity, profile: Profile) -> EnergyEstimate:
    """Modelled energy of a run::

        static = idle_power × wall_s
        busy   = core_busy_power × busy_core_s
        spin   = core_spin_power × spin_core_s
        parked = core_parked_power × parked_core_s
        other  = core_busy_power × max(0, process_cpu_s − busy_core_s − spin_core_s)
        memory = dram_energy_per_byte × weight_bytes_read
    """
    other_s = max(0.0, activity.process_cpu_s - activity.busy_core_s - activity.spin_core_s)
    inputs = {
        "idle_power": activity.wall_s,
        "core_busy_power": activity.busy_core_s + other_s,
        "core_spin_power": activity.spin_core_s,
        "core_parked_power": activity.parked_core_s,
        "dram_energy_per_byte": float(activity.weight_bytes_read),
    }
    used = tuple(pid for pid in _MODEL_PARAMETERS
                 if inputs[pid] > 0 and profile.parameters[pid].provenance == "placeholder")
    busy_w = profile.value("core_busy_power")
    return EnergyEstimate(
        profile=profile.name,
        static_j=profile.value("idle_power") * activity.wall_s,
        busy_j=busy_w * activity.busy_core_s,
        spin_j=profile.value("core_spin_power") * activity.spin_core_s,
        parked_j=profile.value("core_parked_power") * activity.parked_core_s,
        other_cpu_j=busy_w * other_s,
        memory_j=profile.value("dram_energy_per_byte") * activity.weight_bytes_read,
        placeholders=used,
    )


# ---------------------------------------------------------------------------------------------
# Measurement: RAPL (powercap) and hwmon energy counters

_RAPL_TOP = re.compile(r"(intel-rapl|amd-rapl):(\d+)\Z")
_RAPL_SUB = re.compile(r"(intel-rapl|amd-rapl):(\d+):(\d+)\Z")
_HWMON_ENERGY = re.compile(r"energy(\d+)_input\Z")
_ROOT_ONLY = ("RAPL energy_uj is readable by root only on kernels with the CVE-2020-8694 "
              "(Platypus) fix; run as root or grant read access to the file")


@dataclass(frozen=True)
class EnergyDomain:
    """One cumulative energy counter in microjoules.

    ``kind`` is ``"cpu"`` (RAPL package, hwmon sensor) or ``"dram"`` (RAPL dram zone);
    ``max_range_uj`` is RAPL's ``max_energy_range_uj`` (None: wraparound cannot be handled).
    """

    source: str
    name: str
    path: str
    kind: str
    max_range_uj: Optional[int]


@dataclass(frozen=True)
class EnergyReading:
    """Energy counted between :meth:`EnergyMeter.start` and :meth:`EnergyMeter.stop`.

    ``joules`` is None when no counter could be read; ``reason`` then says why.
    """

    source: Optional[str]
    joules: Optional[float]
    cpu_j: Optional[float] = None
    dram_j: Optional[float] = None
    domains: Tuple[str, ...] = ()
    wraps: int = 0
    reason: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.joules is not None

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["domains"] = list(self.domains)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnergyReading:
        return cls(source=_opt_str(data["source"]), joules=_opt_float(data["joules"]),
                   cpu_j=_opt_float(data["cpu_j"]), dram_j=_opt_float(data["dram_j"]),
                   domains=tuple(str(d) for d in data["domains"]), wraps=int(data["wraps"]),
                   reason=_opt_str(data["reason"]))


def _read_text(path: Path) -> str:
    """Read a sysfs attribute (a seam for tests)."""
    return path.read_text(encoding="ascii")


def _read_int(path: Path) -> int:
    text = _read_text(path).strip()
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}: not an integer: {text[:40]!r}") from None


def _read_label(path: Path, default: str) -> str:
    try:
        return _read_text(path).strip() or default
    except (OSError, UnicodeDecodeError):
        return default


def _max_range(zone: Path) -> Optional[int]:
    try:
        value = _read_int(zone / "max_energy_range_uj")
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return value if value > 0 else None


def rapl_domains(root: PathLike = "/sys") -> List[EnergyDomain]:
    """The RAPL counters to sum, from ``<root>/class/powercap`` (``intel-rapl:N`` and
    ``amd-rapl:N`` zones).

    Top-level zones named ``package-*`` are taken; their ``core``/``uncore`` subzones are not
    (they are part of the package energy). A ``dram`` zone is taken separately: DRAM energy is
    not part of the package domain. ``psys`` (platform, includes the package) and the
    ``intel-rapl-mmio`` duplicates of the package zone are skipped, so nothing is counted twice.
    """
    base = Path(root) / "class" / "powercap"
    if not base.is_dir():
        return []
    found: List[EnergyDomain] = []
    for zone in sorted(base.iterdir(), key=lambda p: p.name):
        top = _RAPL_TOP.match(zone.name)
        sub = _RAPL_SUB.match(zone.name)
        if not (top or sub) or not (zone / "energy_uj").exists():
            continue
        label = _read_label(zone / "name", zone.name)
        if top and label.startswith("package"):
            kind = "cpu"
        elif label == "dram":
            kind = "dram"
        else:
            continue
        found.append(EnergyDomain(source="rapl", name=f"{zone.name} ({label})",
                                  path=str(zone / "energy_uj"), kind=kind,
                                  max_range_uj=_max_range(zone)))
    return found


def _default_hwmon_include(device: str, label: str) -> bool:
    # amd_energy reports per-core "EcoreNNN" counters next to per-socket "EsocketN" ones; the
    # socket counter already includes its cores.
    return not label.startswith("Ecore")


def hwmon_domains(root: PathLike = "/sys",
                  include: Optional[Callable[[str, str], bool]] = None) -> List[EnergyDomain]:
    """hwmon energy counters (``<root>/class/hwmon/hwmon*/energy*_input``, microjoules).

    ``include(device_name, label)`` selects sensors; the default drops amd_energy's per-core
    ``Ecore*`` counters (the socket counter includes them). Only cumulative ``energy*_input``
    counters are supported: ``power*_input`` would need sampling and integration.
    """
    base = Path(root) / "class" / "hwmon"
    if not base.is_dir():
        return []
    keep = include or _default_hwmon_include
    found: List[EnergyDomain] = []
    for dev in sorted(base.iterdir(), key=lambda p: p.name):
        device = _read_label(dev / "name", dev.name)
        sensors = []
        for f in dev.glob("energy*_input"):
            m = _HWMON_ENERGY.match(f.name)
            if m:
                sensors.append((int(m.group(1)), f))
        for index, f in sorted(sensors):
            label = _read_label(dev / f"energy{index}_label", f"energy{index}")
            if keep(device, label):
                found.append(EnergyDomain(source="hwmon", name=f"{dev.name}/{device}/{label}",
                                          path=str(f), kind="cpu", max_range_uj=None))
    return found


class EnergyMeter:
    """Reads energy counters around a run::

        with EnergyMeter() as meter:          # or meter.start() ... meter.stop()
            run()
        meter.reading.joules                  # None (with meter.reading.reason) if unreadable

    ``source`` is ``"auto"`` (RAPL, else hwmon), ``"rapl"`` or ``"hwmon"``; ``root`` is the
    sysfs mount point (a fake tree in tests). RAPL counters wrap at ``max_energy_range_uj``;
    one wrap between two reads is corrected, so call :meth:`sample` more often than a counter
    can wrap twice during long runs.
    """

    def __init__(self, root: PathLike = "/sys", source: str = "auto",
                 hwmon_include: Optional[Callable[[str, str], bool]] = None) -> None:
        if source not in ("auto", "rapl", "hwmon"):
            raise ValueError(f"source must be 'auto', 'rapl' or 'hwmon', got {source!r}")
        self.root = os.fspath(root)
        self.source = source
        self.hwmon_include = hwmon_include
        self.reading: Optional[EnergyReading] = None
        self._domains: List[EnergyDomain] = []
        self._last: Dict[str, int] = {}
        self._acc: Dict[str, int] = {}
        self._wraps = 0
        self._error: Optional[str] = None
        self._active: Optional[str] = None

    def _snapshot(self, domains: List[EnergyDomain]) -> Tuple[Optional[Dict[str, int]],
                                                              Optional[str]]:
        values: Dict[str, int] = {}
        for d in domains:
            try:
                values[d.path] = _read_int(Path(d.path))
            except PermissionError:
                hint = f": {_ROOT_ONLY}" if d.source == "rapl" else ""
                return None, f"permission denied reading {d.path}{hint}"
            except OSError as e:
                return None, f"cannot read {d.path}: {e.strerror or e}"
            except (ValueError, UnicodeDecodeError) as e:
                return None, f"cannot parse {d.path}: {e}"
        return values, None

    def start(self) -> EnergyMeter:
        """Discover the counters and take the first reading."""
        self.reading = None
        self._domains, self._last, self._acc = [], {}, {}
        self._wraps, self._error, self._active = 0, None, None
        kinds = ["rapl", "hwmon"] if self.source == "auto" else [self.source]
        reasons: List[str] = []
        for kind in kinds:
            if kind == "rapl":
                domains = rapl_domains(self.root)
                where = os.path.join(self.root, "class", "powercap")
                missing = f"no RAPL package zone under {where}"
            else:
                domains = hwmon_domains(self.root, self.hwmon_include)
                where = os.path.join(self.root, "class", "hwmon")
                missing = f"no hwmon energy*_input counter under {where}"
            if not domains:
                reasons.append(missing)
                continue
            values, reason = self._snapshot(domains)
            if values is None:
                reasons.append(reason or "unreadable")
                continue
            self._domains, self._last, self._active = domains, values, kind
            self._acc = {d.path: 0 for d in domains}
            return self
        self._error = "; ".join(reasons)
        return self

    def sample(self) -> None:
        """Accumulate the energy since the previous reading (handles one wrap per counter)."""
        if self._active is None or self._error is not None:
            return
        values, reason = self._snapshot(self._domains)
        if values is None:
            self._error = reason
            return
        for d in self._domains:
            delta = values[d.path] - self._last[d.path]
            if delta < 0:
                if d.max_range_uj is None:
                    self._error = (f"{d.path} went backwards ({self._last[d.path]} -> "
                                   f"{values[d.path]} uJ) and has no max_energy_range_uj: "
                                   f"counter reset or wrap, energy unknown")
                    return
                delta += d.max_range_uj
                self._wraps += 1
            self._acc[d.path] += delta
        self._last = values

    def stop(self) -> EnergyReading:
        """Take the last reading and return the energy since :meth:`start`."""
        self.sample()
        names = tuple(d.name for d in self._domains)
        if self._active is None or self._error is not None:
            self.reading = EnergyReading(source=self._active, joules=None, domains=names,
                                         wraps=self._wraps,
                                         reason=self._error or "meter was not started")
        else:
            cpu = sum(self._acc[d.path] for d in self._domains if d.kind == "cpu") / 1e6
            has_dram = any(d.kind == "dram" for d in self._domains)
            dram = (sum(self._acc[d.path] for d in self._domains if d.kind == "dram") / 1e6
                    if has_dram else None)
            self.reading = EnergyReading(source=self._active, joules=cpu + (dram or 0.0),
                                         cpu_j=cpu, dram_j=dram, domains=names,
                                         wraps=self._wraps)
        self._active = None
        return self.reading

    def __enter__(self) -> EnergyMeter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# SCI report and CodeCarbon interop

SCI_SPEC = "Green Software Foundation SCI v1.1.0 (ISO/IEC 21031:2024)"

CODECARBON_SCHEMA = "CodeCarbon 2.4.2 emissions.csv (31 columns)"
CODECARBON_COLUMNS: Tuple[str, ...] = (
    "timestamp", "project_name", "run_id", "duration", "emissions", "emissions_rate",
    "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy",
    "energy_consumed", "country_name", "country_iso_code", "region", "cloud_provider",
    "cloud_region", "os", "python_version", "codecarbon_version", "cpu_count", "cpu_model",
    "gpu_count", "gpu_model", "longitude", "latitude", "ram_total_size", "tracking_mode",
    "on_cloud", "pue",
)
"""The ``emissions.csv`` header written by CodeCarbon 2.2–2.4 (2.4.2 cited), in order."""


@dataclass(frozen=True)
class RunInfo:
    """Descriptive fields for the report and the CodeCarbon row (empty when unknown)."""

    project_name: str = "fwassist"
    run_id: str = ""
    timestamp: str = ""
    country_name: str = ""
    country_iso_code: str = ""
    region: str = ""
    os: str = ""
    python_version: str = ""
    cpu_count: Optional[int] = None
    cpu_model: str = ""

    @classmethod
    def here(cls, project_name: str = "fwassist", run_id: Optional[str] = None,
             country_name: str = "", country_iso_code: str = "", region: str = "",
             cpu_model: str = "") -> RunInfo:
        """Fill run id (uuid4), timestamp (now, local, ``%Y-%m-%dT%H:%M:%S``), OS, Python and
        CPU count from this machine."""
        return cls(project_name=project_name, run_id=run_id or str(uuid.uuid4()),
                   timestamp=_dt.datetime.now().strftime("%Y-%m-%dT%H:%M:%S"),
                   country_name=country_name, country_iso_code=country_iso_code,
                   region=region, os=platform.platform(),
                   python_version=platform.python_version(), cpu_count=os.cpu_count(),
                   cpu_model=cpu_model)


@dataclass(frozen=True)
class SciReport:
    """One run's energy and SCI figures (grams CO2e unless named otherwise).

    ``energy_j`` is the E used (measured when a reading was given and usable, else modelled;
    ``energy_source`` says which), already multiplied by ``pue``. ``model`` is the modelled
    breakdown, always present. SCI = (operational_g + embodied_g) / R, with R = generated
    tokens / 1000 and generated lines / 1000 (None when R is zero or unknown).
    """

    spec: str
    energy_source: str
    energy_j: float
    energy_kwh: float
    pue: float
    grid_intensity_g_per_kwh: float
    operational_g: float
    embodied_g: Optional[float]
    embodied_method: str
    total_g: float
    sci_g_per_1k_tokens: Optional[float]
    sci_g_per_1k_lines: Optional[float]
    activity: Activity
    model: EnergyEstimate
    measured: Optional[EnergyReading]
    profile: Profile
    info: RunInfo = field(default_factory=RunInfo)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict in a fixed key order."""
        return {
            "spec": self.spec,
            "functional_units": ["1000 generated tokens", "1000 generated lines of code"],
            "sci_g_per_1k_tokens": self.sci_g_per_1k_tokens,
            "sci_g_per_1k_lines": self.sci_g_per_1k_lines,
            "total_g": self.total_g,
            "operational_g": self.operational_g,
            "embodied_g": self.embodied_g,
            "embodied_method": self.embodied_method,
            "energy_source": self.energy_source,
            "energy_j": self.energy_j,
            "energy_kwh": self.energy_kwh,
            "pue": self.pue,
            "grid_intensity_g_per_kwh": self.grid_intensity_g_per_kwh,
            "activity": self.activity.to_dict(),
            "model": self.model.to_dict(),
            "measured": None if self.measured is None else self.measured.to_dict(),
            "profile": self.profile.to_dict(),
            "info": asdict(self.info),
        }

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SciReport:
        measured = data["measured"]
        info = data["info"]
        return cls(
            spec=str(data["spec"]), energy_source=str(data["energy_source"]),
            energy_j=float(data["energy_j"]), energy_kwh=float(data["energy_kwh"]),
            pue=float(data["pue"]),
            grid_intensity_g_per_kwh=float(data["grid_intensity_g_per_kwh"]),
            operational_g=float(data["operational_g"]),
            embodied_g=_opt_float(data["embodied_g"]),
            embodied_method=str(data["embodied_method"]), total_g=float(data["total_g"]),
            sci_g_per_1k_tokens=_opt_float(data["sci_g_per_1k_tokens"]),
            sci_g_per_1k_lines=_opt_float(data["sci_g_per_1k_lines"]),
            activity=Activity.from_dict(data["activity"]),
            model=EnergyEstimate.from_dict(data["model"]),
            measured=None if measured is None else EnergyReading.from_dict(measured),
            profile=Profile.from_dict(data["profile"], "<report profile>"),
            info=RunInfo(**info),
        )

    @classmethod
    def from_json(cls, text: str) -> SciReport:
        return cls.from_dict(json.loads(text))

    # CodeCarbon -----------------------------------------------------------------------------

    @staticmethod
    def codecarbon_csv_header() -> str:
        """The CodeCarbon ``emissions.csv`` header line (no newline)."""
        return ",".join(CODECARBON_COLUMNS)

    def codecarbon_values(self) -> Dict[str, str]:
        """The row as column -> text. Energies in kWh, emissions in kg, power in W; what we do
        not know is left empty. ``emissions`` is operational only (E·I, as CodeCarbon
        computes it); embodied emissions and SCI are in the JSON report."""
        wall = self.activity.wall_s
        if self.energy_source != "model" and self.measured is not None:
            cpu_j: Optional[float] = self.measured.cpu_j
            ram_j: Optional[float] = self.measured.dram_j
        else:
            cpu_j = self.model.static_j + self.model.cores_j
            ram_j = self.model.memory_j
        emissions_kg = self.operational_g / 1000.0

        def num(x: Optional[float]) -> str:
            return "" if x is None else repr(float(x))

        def power(j: Optional[float]) -> str:
            return "" if j is None or wall <= 0 else repr(j / wall)

        values = {
            "timestamp": self.info.timestamp,
            "project_name": self.info.project_name,
            "run_id": self.info.run_id,
            "duration": num(wall),
            "emissions": num(emissions_kg),
            "emissions_rate": num(emissions_kg / wall if wall > 0 else 0.0),
            "cpu_power": power(cpu_j),
            "gpu_power": "0.0",
            "ram_power": power(ram_j),
            "cpu_energy": num(None if cpu_j is None else joules_to_kwh(cpu_j)),
            "gpu_energy": "0",
            "ram_energy": num(None if ram_j is None else joules_to_kwh(ram_j)),
            "energy_consumed": num(self.energy_kwh),
            "country_name": self.info.country_name,
            "country_iso_code": self.info.country_iso_code,
            "region": self.info.region,
            "cloud_provider": "",
            "cloud_region": "",
            "os": self.info.os,
            "python_version": self.info.python_version,
            "codecarbon_version": "",
            "cpu_count": "" if self.info.cpu_count is None else str(self.info.cpu_count),
            "cpu_model": self.info.cpu_model,
            "gpu_count": "",
            "gpu_model": "",
            "longitude": "",
            "latitude": "",
            "ram_total_size": "",
            "tracking_mode": "process",
            "on_cloud": "N",
            "pue": num(self.pue),
        }
        if tuple(values) != CODECARBON_COLUMNS:  # pragma: no cover - a coding error
            raise AssertionError("CodeCarbon row out of column order")
        return values

    def codecarbon_csv_row(self) -> str:
        """One ``emissions.csv`` data line in :data:`CODECARBON_COLUMNS` order (no newline)."""
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(list(self.codecarbon_values().values()))
        return buf.getvalue()


def sci_report(activity: Activity, profile: Profile, *, grid_intensity_g_per_kwh: float,
               measured: Optional[EnergyReading] = None, embodied_g: Optional[float] = None,
               resource_share: float = 1.0, pue: float = 1.0,
               info: Optional[RunInfo] = None) -> SciReport:
    """SCI = (E·I + M) / R for one run.

    * E: ``measured.joules`` when given and readable (source ``rapl``/``hwmon``), else
      :func:`estimate` (source ``model``); times ``pue``; in kWh.
    * I: ``grid_intensity_g_per_kwh``, location-based, supplied by the caller (required).
    * M: ``embodied_g`` when given; else, when the profile has ``embodied_emissions`` (TE, kg)
      and ``lifetime`` (EL, h), TE × (wall_s / EL) × ``resource_share`` (the SCI
      TE × TS × RS, RS = 1 for a dedicated device); else not included (None).
    * R: generated tokens / 1000 and generated lines / 1000.
    """
    for name, value in (("grid_intensity_g_per_kwh", grid_intensity_g_per_kwh),
                        ("resource_share", resource_share), ("pue", pue)):
        _amount(name, value)
    if pue < 1:
        raise ValueError(f"pue: must be >= 1, got {pue!r}")
    if resource_share > 1:
        raise ValueError(f"resource_share: must be <= 1, got {resource_share!r}")
    if embodied_g is not None:
        _amount("embodied_g", embodied_g)
    if measured is not None and measured.joules is not None:
        _amount("measured.joules", measured.joules)

    model = estimate(activity, profile)
    if measured is not None and measured.joules is not None:
        source = measured.source or "measured"
        base_j = measured.joules
    else:
        source, base_j = "model", model.total_j
    energy_j = base_j * pue
    energy_kwh = joules_to_kwh(energy_j)
    operational_g = energy_kwh * grid_intensity_g_per_kwh

    m_g: Optional[float]
    if embodied_g is not None:
        m_g, method = float(embodied_g), "given"
    elif profile.has_embodied:
        lifetime_s = profile.value("lifetime") * 3600.0
        te_g = profile.value("embodied_emissions") * 1000.0
        m_g = te_g * (activity.wall_s / lifetime_s) * resource_share
        method = "time-share"
    else:
        m_g, method = None, "not included"
    total_g = operational_g + (m_g or 0.0)

    def per_1k(units: Optional[int]) -> Optional[float]:
        return None if not units else total_g / (units / 1000.0)

    return SciReport(
        spec=SCI_SPEC, energy_source=source, energy_j=energy_j, energy_kwh=energy_kwh,
        pue=float(pue), grid_intensity_g_per_kwh=float(grid_intensity_g_per_kwh),
        operational_g=operational_g, embodied_g=m_g, embodied_method=method, total_g=total_g,
        sci_g_per_1k_tokens=per_1k(activity.generated_tokens),
        sci_g_per_1k_lines=per_1k(activity.generated_lines),
        activity=activity, model=model, measured=measured, profile=profile,
        info=info if info is not None else RunInfo.here(),
    )


def _opt_float(x: Any) -> Optional[float]:
    return None if x is None else float(x)


def _opt_str(x: Any) -> Optional[str]:
    return None if x is None else str(x)
