/* SPDX-License-Identifier: Apache-2.0 */
// The energy model of docs/energy.md in C++ (sdk/fwassist/energy.py's estimate() is the
// reference; tests/test_capi_cffi.py checks the two agree): joules from counted activity and
// a device's power figures, and the Software Carbon Intensity per 1,000 generated tokens.
#pragma once
#include <cstdint>

namespace fwa {

struct EnergyModel {
  double idle_power_w = 0;          // package, every core idle (the static term, × wall)
  double core_busy_power_w = 0;     // per core running work
  double core_spin_power_w = 0;     // per core spin-waiting
  double core_parked_power_w = 0;   // per core parked, above idle
  double dram_energy_j_per_byte = 0;
};

struct EnergyActivity {
  double wall_s = 0, busy_core_s = 0, spin_core_s = 0, parked_core_s = 0, process_cpu_s = 0;
  double weight_bytes_read = 0;
  int64_t generated_tokens = 0;
};

struct EnergyBreakdown {
  double static_j = 0, busy_j = 0, spin_j = 0, parked_j = 0, other_cpu_j = 0, memory_j = 0;
  double total_j = 0;
  double energy_kwh = 0, operational_g = 0, total_g = 0;
  double sci_g_per_1k_tokens = 0;  // 0 when no token was generated
};

// static = idle × wall; busy/spin/parked = power × core-seconds; other = busy power × the
// process CPU time not covered by busy + spin; memory = J/byte × bytes. SCI = (E·I + M) / R,
// E in kWh, I in gCO2e/kWh, M in gCO2e, R = generated tokens / 1000.
EnergyBreakdown estimate_energy(const EnergyActivity& a, const EnergyModel& m,
                                double grid_g_per_kwh, double embodied_g);

}  // namespace fwa
