# SPDX-License-Identifier: Apache-2.0
"""fwassist.energy: profiles, the energy model, RAPL/hwmon counters on a fake sysfs, SCI and
the CodeCarbon row. Pure Python: no compiled core, no real counters."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from fwassist import energy as en

BUNDLED = ("cortex-a53-generic", "cortex-a76-rpi5", "generic-x86", "zen4-desktop")


def param(value, unit, provenance="literature", source="test value"):
    return {"value": value, "unit": unit, "provenance": provenance, "source": source}


def profile_dict(**overrides):
    """Round numbers so every expected value below can be worked out by hand."""
    params = {
        "idle_power": param(2.0, "W", "placeholder"),
        "core_busy_power": param(1.5, "W"),
        "core_spin_power": param(1.0, "W", "placeholder"),
        "core_parked_power": param(0.1, "W"),
        "dram_energy_per_byte": param(1e-10, "J/byte"),
    }
    params.update(overrides)
    return {"schema": en.PROFILE_SCHEMA, "name": "test-board", "description": "hand numbers",
            "parameters": params}


def make_profile(**overrides):
    return en.Profile.from_dict(profile_dict(**overrides), "<test>")


def activity(**kw):
    base = dict(wall_s=10.0, busy_core_s=8.0, spin_core_s=2.0, parked_core_s=10.0,
                process_cpu_s=10.0, weight_bytes_read=10_000_000_000, prompt_tokens=32,
                generated_tokens=250, generated_lines=5, idle_s=1.0)
    base.update(kw)
    return en.Activity(**base)


INFO = en.RunInfo(project_name="fwassist-test", run_id="run-1", timestamp="2026-01-02T03:04:05",
                  country_name="France", country_iso_code="FRA", os="Linux-test",
                  python_version="3.11.7", cpu_count=2, cpu_model="Test CPU")


# --- units -----------------------------------------------------------------------------------

def test_unit_conversions():
    assert en.joules_to_kwh(3.6e6) == 1.0                  # 1 kWh = 1000 W x 3600 s
    assert en.kwh_to_joules(2.5) == 9.0e6
    assert en.joules_to_kwh(en.kwh_to_joules(0.125)) == pytest.approx(0.125)
    # 20 pJ/bit x 8 bit/byte = 160 pJ/byte = 1.6e-10 J/byte
    assert en.pj_per_bit_to_j_per_byte(20) == pytest.approx(1.6e-10)
    assert en.pj_per_bit_to_j_per_byte(3) == pytest.approx(2.4e-11)


# --- profiles --------------------------------------------------------------------------------

def test_bundled_profiles_all_load():
    names = en.available_profiles()
    assert set(BUNDLED) <= set(names)
    for name in names:
        prof = en.load_profile(name)
        assert prof.name == name
        for pid, (unit, required) in en.PARAMETERS.items():
            if required:
                assert pid in prof.parameters, (name, pid)
            if pid in prof.parameters:
                p = prof.parameters[pid]
                assert p.unit == unit and p.provenance in en.PROVENANCES and p.source.strip()
                assert math.isfinite(p.value) and p.value >= 0
        # A bundled profile is a template: the guesses are marked as such.
        assert set(prof.placeholders) <= set(prof.parameters)
        # Round trip through the file form.
        assert en.Profile.from_dict(prof.to_dict()) == prof


def test_load_profile_by_path_and_unknown_name(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(profile_dict()))
    assert en.load_profile(path).name == "test-board"
    assert en.load_profile(str(path)).name == "test-board"
    with pytest.raises(ValueError, match="no such bundled profile"):
        en.load_profile("no-such-device")


def write_profile(tmp_path, data, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["parameters"]["idle_power"].update(provenance="guess"),
     r"parameters\.idle_power\.provenance"),
    (lambda d: d["parameters"]["core_busy_power"].update(value=-1.0),
     r"parameters\.core_busy_power\.value: must be >= 0"),
    (lambda d: d["parameters"]["core_spin_power"].pop("source"),
     r"parameters\.core_spin_power\.source: missing field"),
    (lambda d: d["parameters"].pop("dram_energy_per_byte"),
     r"parameters\.dram_energy_per_byte: missing required parameter"),
    (lambda d: d["parameters"]["dram_energy_per_byte"].update(unit="pJ/bit"),
     r"parameters\.dram_energy_per_byte\.unit: must be 'J/byte'"),
    (lambda d: d["parameters"]["idle_power"].update(value="2"),
     r"parameters\.idle_power\.value: must be a number"),
    (lambda d: d["parameters"]["idle_power"].update(value=True),
     r"parameters\.idle_power\.value: must be a number"),
    (lambda d: d["parameters"]["idle_power"].update(note="x"),
     r"parameters\.idle_power\.note: unknown field"),
    (lambda d: d["parameters"].update(gpu_power=param(1.0, "W")),
     r"parameters\.gpu_power: unknown parameter"),
    (lambda d: d["parameters"].update(embodied_emissions=param(30.0, "kgCO2e")),
     r"embodied_emissions/lifetime: give both or neither"),
    (lambda d: d["parameters"].update(embodied_emissions=param(30.0, "kgCO2e"),
                                      lifetime=param(0.0, "h")),
     r"parameters\.lifetime\.value: must be > 0"),
    (lambda d: d.update(schema="other/2"), r"schema: expected"),
    (lambda d: d.pop("name"), r"name: must be a non-empty string"),
])
def test_profile_validation_errors_name_file_and_field(tmp_path, mutate, field):
    data = profile_dict()
    mutate(data)
    path = write_profile(tmp_path, data)
    with pytest.raises(ValueError, match=field) as err:
        en.Profile.load(path)
    assert str(err.value).startswith(str(path))


def test_profile_non_finite_and_bad_json(tmp_path):
    # json.dumps writes NaN/Infinity literals, which json.loads accepts: the loader must not.
    data = profile_dict(idle_power=param(float("inf"), "W"))
    path = write_profile(tmp_path, data, "inf.json")
    with pytest.raises(ValueError, match=r"inf\.json: parameters\.idle_power\.value: must be "
                                         r"finite"):
        en.Profile.load(path)
    path = write_profile(tmp_path, "{not json", "broken.json")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        en.Profile.load(path)
    with pytest.raises(ValueError, match=r"missing\.json: cannot read profile"):
        en.Profile.load(tmp_path / "missing.json")


# --- the model -------------------------------------------------------------------------------

def test_estimate_breakdown_sums_by_hand():
    prof = make_profile()
    est = en.estimate(activity(process_cpu_s=11.0), prof)
    # static = 2.0 W x 10 s                    = 20 J
    # busy   = 1.5 W x 8 core-s                = 12 J
    # spin   = 1.0 W x 2 core-s                =  2 J
    # parked = 0.1 W x 10 core-s               =  1 J
    # other  = 1.5 W x (11 - 8 - 2) core-s     =  1.5 J  (process CPU outside the pool)
    # memory = 1e-10 J/byte x 1e10 bytes       =  1 J
    assert est.static_j == pytest.approx(20.0)
    assert est.busy_j == pytest.approx(12.0)
    assert est.spin_j == pytest.approx(2.0)
    assert est.parked_j == pytest.approx(1.0)
    assert est.other_cpu_j == pytest.approx(1.5)
    assert est.memory_j == pytest.approx(1.0)
    assert est.cores_j == pytest.approx(12 + 2 + 1 + 1.5)
    assert est.total_j == pytest.approx(20 + 16.5 + 1)
    assert est.total_j == pytest.approx(est.static_j + est.busy_j + est.spin_j + est.parked_j
                                        + est.other_cpu_j + est.memory_j)
    assert est.placeholders == ("idle_power", "core_spin_power")
    # A placeholder whose input is zero did not contribute and is not listed.
    assert en.estimate(activity(spin_core_s=0.0), prof).placeholders == ("idle_power",)


def test_estimate_without_pool_counters_charges_process_cpu_at_busy_power():
    # A baseline process (no pool counters): 6 s of process CPU at 1.5 W = 9 J, + 20 J static.
    act = en.Activity(wall_s=10.0, process_cpu_s=6.0, generated_tokens=10)
    est = en.estimate(act, make_profile())
    assert est.busy_j == 0 and est.other_cpu_j == pytest.approx(9.0)
    assert est.total_j == pytest.approx(29.0)


@pytest.mark.parametrize("kw, match", [
    (dict(wall_s=-1.0), r"Activity\.wall_s"),
    (dict(spin_core_s=float("nan")), r"Activity\.spin_core_s"),
    (dict(generated_tokens=2.5), r"Activity\.generated_tokens: must be an integer"),
    (dict(generated_lines=-3), r"Activity\.generated_lines"),
    (dict(idle_s=11.0), r"Activity\.idle_s: 11\.0 exceeds wall_s"),
    (dict(busy_core_s=True), r"Activity\.busy_core_s: must be a number"),
])
def test_activity_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        activity(**kw)


# --- SCI -------------------------------------------------------------------------------------

def test_sci_model_energy_with_embodied_time_share():
    prof = make_profile(embodied_emissions=param(36.0, "kgCO2e", "placeholder"),
                        lifetime=param(1000.0, "h", "placeholder"))
    rep = en.sci_report(activity(), prof, grid_intensity_g_per_kwh=500.0, info=INFO)
    # E = 20 (static) + 12 (busy) + 2 (spin) + 1 (parked) + 0 (other) + 1 (memory) = 36 J
    #   = 36 / 3.6e6 kWh = 1e-5 kWh
    # O = E x I = 1e-5 kWh x 500 g/kWh = 0.005 g
    # M = TE x TiR / EL = 36 kg x 1000 g/kg x 10 s / (1000 h x 3600 s/h)
    #   = 36000 g x 10 / 3.6e6 = 0.1 g
    # C = O + M = 0.105 g
    # per 1k tokens: R = 250 / 1000 = 0.25   -> 0.105 / 0.25  = 0.42 g
    # per 1k lines:  R = 5 / 1000 = 0.005    -> 0.105 / 0.005 = 21 g
    assert rep.energy_source == "model"
    assert rep.energy_j == pytest.approx(36.0)
    assert rep.energy_kwh == pytest.approx(1e-5)
    assert rep.operational_g == pytest.approx(0.005)
    assert rep.embodied_method == "time-share"
    assert rep.embodied_g == pytest.approx(0.1)
    assert rep.total_g == pytest.approx(0.105)
    assert rep.sci_g_per_1k_tokens == pytest.approx(0.42)
    assert rep.sci_g_per_1k_lines == pytest.approx(21.0)
    assert rep.spec == en.SCI_SPEC


def test_sci_measured_energy_no_embodied_no_lines():
    reading = en.EnergyReading(source="rapl", joules=7.2, cpu_j=7.2,
                               domains=("intel-rapl:0 (package-0)",))
    rep = en.sci_report(activity(generated_tokens=100, generated_lines=None), make_profile(),
                        grid_intensity_g_per_kwh=250.0, measured=reading, info=INFO)
    # E = 7.2 J = 7.2 / 3.6e6 = 2e-6 kWh;  O = 2e-6 x 250 = 5e-4 g;  M not included
    # per 1k tokens: 5e-4 / (100 / 1000) = 5e-3 g;  per 1k lines: no lines -> None
    assert rep.energy_source == "rapl"
    assert rep.energy_kwh == pytest.approx(2e-6)
    assert rep.operational_g == pytest.approx(5e-4)
    assert rep.embodied_g is None and rep.embodied_method == "not included"
    assert rep.sci_g_per_1k_tokens == pytest.approx(5e-3)
    assert rep.sci_g_per_1k_lines is None
    assert rep.model.total_j == pytest.approx(36.0)   # the modelled breakdown is still reported


def test_sci_given_embodied_pue_and_unreadable_meter_falls_back_to_model():
    unreadable = en.EnergyReading(source=None, joules=None, reason="permission denied")
    rep = en.sci_report(activity(generated_tokens=0), make_profile(),
                        grid_intensity_g_per_kwh=100.0, measured=unreadable, embodied_g=0.2,
                        pue=1.5, info=INFO)
    # E = 36 J x PUE 1.5 = 54 J = 1.5e-5 kWh;  O = 1.5e-5 x 100 = 1.5e-3 g;  M = 0.2 g (given)
    # C = 0.2015 g; no generated tokens -> no per-token figure
    assert rep.energy_source == "model"
    assert rep.energy_j == pytest.approx(54.0)
    assert rep.operational_g == pytest.approx(1.5e-3)
    assert rep.embodied_method == "given" and rep.total_g == pytest.approx(0.2015)
    assert rep.sci_g_per_1k_tokens is None
    assert rep.sci_g_per_1k_lines == pytest.approx(0.2015 / 0.005)   # 40.3 g per 1k lines
    assert rep.measured is not None and rep.measured.reason == "permission denied"


def test_sci_resource_share_and_argument_checks():
    prof = make_profile(embodied_emissions=param(36.0, "kgCO2e"), lifetime=param(1000.0, "h"))
    rep = en.sci_report(activity(), prof, grid_intensity_g_per_kwh=0.0, resource_share=0.5,
                        info=INFO)
    # M = 0.1 g (as above) x RS 0.5 = 0.05 g; I = 0 -> O = 0
    assert rep.embodied_g == pytest.approx(0.05) and rep.total_g == pytest.approx(0.05)
    with pytest.raises(TypeError):
        en.sci_report(activity(), prof, info=INFO)   # no default grid intensity
    for kw in (dict(grid_intensity_g_per_kwh=-1.0), dict(grid_intensity_g_per_kwh=math.nan),
               dict(grid_intensity_g_per_kwh=1.0, pue=0.9),
               dict(grid_intensity_g_per_kwh=1.0, resource_share=1.5),
               dict(grid_intensity_g_per_kwh=1.0, embodied_g=-1.0)):
        with pytest.raises(ValueError):
            en.sci_report(activity(), prof, info=INFO, **kw)


def test_json_round_trip_and_stable_key_order():
    reading = en.EnergyReading(source="rapl", joules=7.5, cpu_j=7.0, dram_j=0.5,
                               domains=("intel-rapl:0 (package-0)", "intel-rapl:0:2 (dram)"),
                               wraps=1)
    prof = make_profile(embodied_emissions=param(36.0, "kgCO2e"), lifetime=param(1000.0, "h"))
    rep = en.sci_report(activity(), prof, grid_intensity_g_per_kwh=420.0, measured=reading,
                        info=INFO)
    text = rep.to_json()
    assert text == rep.to_json()
    back = en.SciReport.from_json(text)
    assert back == rep
    assert back.to_json() == text
    keys = list(json.loads(text))
    assert keys[:4] == ["spec", "functional_units", "sci_g_per_1k_tokens", "sci_g_per_1k_lines"]
    assert keys[-5:] == ["activity", "model", "measured", "profile", "info"]
    model = json.loads(text)["model"]
    assert model["total_j"] == pytest.approx(36.0)
    # Without a reading and without embodied: nulls survive the round trip.
    rep2 = en.sci_report(activity(generated_lines=None), make_profile(),
                         grid_intensity_g_per_kwh=420.0, info=INFO)
    assert en.SciReport.from_json(rep2.to_json()) == rep2


# --- CodeCarbon ------------------------------------------------------------------------------

CODECARBON_2_4_HEADER = (
    "timestamp,project_name,run_id,duration,emissions,emissions_rate,cpu_power,gpu_power,"
    "ram_power,cpu_energy,gpu_energy,ram_energy,energy_consumed,country_name,country_iso_code,"
    "region,cloud_provider,cloud_region,os,python_version,codecarbon_version,cpu_count,"
    "cpu_model,gpu_count,gpu_model,longitude,latitude,ram_total_size,tracking_mode,on_cloud,pue")


def test_codecarbon_header_and_row():
    assert en.SciReport.codecarbon_csv_header() == CODECARBON_2_4_HEADER
    assert len(en.CODECARBON_COLUMNS) == 31
    rep = en.sci_report(activity(), make_profile(), grid_intensity_g_per_kwh=500.0, info=INFO)
    row = next(csv.reader([rep.codecarbon_csv_row()]))
    assert len(row) == len(en.CODECARBON_COLUMNS)
    values = dict(zip(en.CODECARBON_COLUMNS, row))
    assert values["timestamp"] == "2026-01-02T03:04:05"
    assert values["project_name"] == "fwassist-test" and values["run_id"] == "run-1"
    assert float(values["duration"]) == 10.0
    # emissions in kg, operational only: 0.005 g = 5e-6 kg; rate = 5e-6 kg / 10 s
    assert float(values["emissions"]) == pytest.approx(5e-6)
    assert float(values["emissions_rate"]) == pytest.approx(5e-7)
    # model split: cpu = static + cores = 20 + 15 = 35 J; ram = memory = 1 J (kWh, mean W)
    assert float(values["cpu_energy"]) == pytest.approx(35 / 3.6e6)
    assert float(values["ram_energy"]) == pytest.approx(1 / 3.6e6)
    assert float(values["cpu_power"]) == pytest.approx(3.5)
    assert float(values["ram_power"]) == pytest.approx(0.1)
    assert float(values["energy_consumed"]) == pytest.approx(1e-5)
    assert values["tracking_mode"] == "process" and values["on_cloud"] == "N"
    assert float(values["pue"]) == 1.0
    assert values["country_iso_code"] == "FRA" and values["cpu_count"] == "2"
    assert values["codecarbon_version"] == "" and values["longitude"] == ""


def test_codecarbon_row_quotes_commas_and_uses_measured_split():
    info = en.RunInfo(project_name="a,b", run_id="r", timestamp="t", cpu_model='CPU "X", 2C')
    reading = en.EnergyReading(source="rapl", joules=9.0, cpu_j=9.0, dram_j=None,
                               domains=("intel-rapl:0 (package-0)",))
    rep = en.sci_report(activity(), make_profile(), grid_intensity_g_per_kwh=1.0,
                        measured=reading, info=info)
    row = next(csv.reader([rep.codecarbon_csv_row()]))
    values = dict(zip(en.CODECARBON_COLUMNS, row))
    assert len(row) == 31 and values["project_name"] == "a,b"
    assert values["cpu_model"] == 'CPU "X", 2C'
    assert float(values["cpu_energy"]) == pytest.approx(9.0 / 3.6e6)
    assert values["ram_energy"] == "" and values["ram_power"] == ""   # no RAPL dram zone


# --- RAPL on a fake sysfs --------------------------------------------------------------------

def zone(root: Path, dirname: str, name: str, energy: int, max_range: int = 1_000_000_000):
    d = root / "class" / "powercap" / dirname
    d.mkdir(parents=True, exist_ok=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy}\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return d / "energy_uj"


def set_counter(path: Path, value: int):
    path.write_text(f"{value}\n")


def test_rapl_package_only_no_double_counting(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    core = zone(tmp_path, "intel-rapl:0:0", "core", 500_000)
    psys = zone(tmp_path, "intel-rapl:1", "psys", 3_000_000)
    mmio = zone(tmp_path, "intel-rapl-mmio:0", "package-0", 1_000_000)
    (tmp_path / "class" / "powercap" / "intel-rapl").mkdir()      # the control-type dir
    names = [d.name for d in en.rapl_domains(tmp_path)]
    assert names == ["intel-rapl:0 (package-0)"]
    meter = en.EnergyMeter(root=tmp_path).start()
    set_counter(pkg, 3_500_000)      # +2.5 J
    set_counter(core, 2_000_000)     # inside the package: not added
    set_counter(psys, 9_000_000)     # platform, includes the package: not added
    set_counter(mmio, 3_500_000)     # duplicate interface to the package: not added
    reading = meter.stop()
    assert reading.ok and reading.source == "rapl"
    assert reading.joules == pytest.approx(2.5) and reading.cpu_j == pytest.approx(2.5)
    assert reading.dram_j is None and reading.wraps == 0


def test_rapl_two_packages_dram_zone_and_amd_name(tmp_path):
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    p1 = zone(tmp_path, "intel-rapl:1", "package-1", 0)
    dram = zone(tmp_path, "intel-rapl:0:1", "dram", 0)
    with en.EnergyMeter(root=tmp_path, source="rapl") as meter:
        set_counter(p0, 1_000_000)
        set_counter(p1, 2_000_000)
        set_counter(dram, 250_000)
    r = meter.reading
    assert r is not None and r.joules == pytest.approx(3.25)
    assert r.cpu_j == pytest.approx(3.0) and r.dram_j == pytest.approx(0.25)

    amd = tmp_path / "amd"
    pkg = zone(amd, "amd-rapl:0", "package-0", 10)
    meter = en.EnergyMeter(root=amd).start()
    set_counter(pkg, 1_000_010)
    assert meter.stop().joules == pytest.approx(1.0)


def test_rapl_wraparound(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 999_000_000, max_range=1_000_000_000)
    meter = en.EnergyMeter(root=tmp_path).start()
    set_counter(pkg, 500_000)
    reading = meter.stop()
    # delta = 500_000 - 999_000_000 + 1_000_000_000 = 1_500_000 uJ = 1.5 J
    assert reading.joules == pytest.approx(1.5) and reading.wraps == 1


def test_rapl_sampling_accumulates_across_several_wraps(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 900, max_range=1000)
    meter = en.EnergyMeter(root=tmp_path).start()
    # 900 -> 100 (wrap, +200) -> 600 (+500) -> 50 (wrap, +450) = 1150 uJ
    for value in (100, 600, 50):
        set_counter(pkg, value)
        meter.sample()
    reading = meter.stop()
    assert reading.joules == pytest.approx(1150e-6) and reading.wraps == 2


def deny_reads(monkeypatch, denied_path) -> None:
    """Makes reading denied_path fail with EACCES. Tests may run as root, where chmod 000
    does not stop a read: fail the read itself instead."""
    real = en._read_text

    def read(path):
        if Path(path) == denied_path:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(en, "_read_text", read)


def test_rapl_unreadable_permission_denied(tmp_path, monkeypatch):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 100)
    deny_reads(monkeypatch, pkg)
    meter = en.EnergyMeter(root=tmp_path, source="rapl").start()
    reading = meter.stop()
    assert reading.joules is None and not reading.ok
    assert "permission denied" in reading.reason and "CVE-2020-8694" in reading.reason
    assert str(pkg) in reading.reason


def test_rapl_becomes_unreadable_and_garbage(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 100)
    meter = en.EnergyMeter(root=tmp_path).start()
    pkg.unlink()
    pkg.mkdir()                       # reading a directory fails (IsADirectoryError)
    reading = meter.stop()
    assert reading.joules is None and "cannot read" in reading.reason

    other = tmp_path / "g"
    pkg = zone(other, "intel-rapl:0", "package-0", 100)
    meter = en.EnergyMeter(root=other).start()
    pkg.write_text("garbage\n")
    reading = meter.stop()
    assert reading.joules is None and "not an integer" in reading.reason


def test_rapl_backwards_without_range_is_unknown(tmp_path):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 5000)
    (pkg.parent / "max_energy_range_uj").unlink()
    meter = en.EnergyMeter(root=tmp_path).start()
    set_counter(pkg, 10)
    reading = meter.stop()
    assert reading.joules is None and "went backwards" in reading.reason


# --- hwmon on a fake sysfs -------------------------------------------------------------------

def hwmon(root: Path, dev: str, name: str, sensors):
    d = root / "class" / "hwmon" / dev
    d.mkdir(parents=True, exist_ok=True)
    (d / "name").write_text(name + "\n")
    paths = {}
    for index, (label, value) in sensors.items():
        (d / f"energy{index}_input").write_text(f"{value}\n")
        if label is not None:
            (d / f"energy{index}_label").write_text(label + "\n")
        paths[index] = d / f"energy{index}_input"
    return paths


def test_hwmon_energy_counters(tmp_path):
    amd = hwmon(tmp_path, "hwmon0", "amd_energy",
                {1: ("Ecore000", 10), 2: ("Ecore001", 10), 17: ("Esocket0", 1_000)})
    hwmon(tmp_path, "hwmon1", "nvme", {})                       # no energy counters
    scmi = hwmon(tmp_path, "hwmon2", "scmi_sensors", {1: (None, 0)})
    names = [d.name for d in en.hwmon_domains(tmp_path)]
    assert names == ["hwmon0/amd_energy/Esocket0", "hwmon2/scmi_sensors/energy1"]
    meter = en.EnergyMeter(root=tmp_path).start()               # no powercap -> hwmon
    set_counter(amd[1], 400_010)                                # per-core: inside the socket
    set_counter(amd[17], 2_001_000)                             # +2 J
    set_counter(scmi[1], 500_000)                               # +0.5 J
    reading = meter.stop()
    assert reading.source == "hwmon" and reading.joules == pytest.approx(2.5)

    only_scmi = en.EnergyMeter(root=tmp_path, source="hwmon",
                               hwmon_include=lambda dev, label: dev == "scmi_sensors")
    only_scmi.start()
    set_counter(scmi[1], 800_000)
    assert only_scmi.stop().joules == pytest.approx(0.3)


def test_hwmon_counter_reset_is_unknown(tmp_path):
    paths = hwmon(tmp_path, "hwmon0", "amd_energy", {17: ("Esocket0", 5_000)})
    meter = en.EnergyMeter(root=tmp_path, source="hwmon").start()
    set_counter(paths[17], 100)
    reading = meter.stop()
    assert reading.joules is None and "went backwards" in reading.reason


def test_no_counters_anywhere(tmp_path):
    reading = en.EnergyMeter(root=tmp_path).start().stop()
    assert reading.joules is None
    assert "no RAPL package zone" in reading.reason
    assert "no hwmon energy*_input" in reading.reason
    assert en.EnergyMeter(root=tmp_path).stop().reason == "meter was not started"
    with pytest.raises(ValueError):
        en.EnergyMeter(source="perf")


def test_auto_falls_back_to_hwmon_when_rapl_is_denied(tmp_path, monkeypatch):
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 100)
    paths = hwmon(tmp_path, "hwmon0", "amd_energy", {17: ("Esocket0", 0)})
    deny_reads(monkeypatch, pkg)
    meter = en.EnergyMeter(root=tmp_path).start()
    set_counter(paths[17], 1_000_000)
    reading = meter.stop()
    assert reading.source == "hwmon" and reading.joules == pytest.approx(1.0)
