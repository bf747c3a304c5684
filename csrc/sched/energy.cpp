// SPDX-License-Identifier: Apache-2.0
#include "sched/energy.h"

#include <algorithm>

namespace fwa {

EnergyBreakdown estimate_energy(const EnergyActivity& a, const EnergyModel& m,
                                double grid_g_per_kwh, double embodied_g) {
  EnergyBreakdown e;
  const double other_s = std::max(0.0, a.process_cpu_s - a.busy_core_s - a.spin_core_s);
  e.static_j = m.idle_power_w * a.wall_s;
  e.busy_j = m.core_busy_power_w * a.busy_core_s;
  e.spin_j = m.core_spin_power_w * a.spin_core_s;
  e.parked_j = m.core_parked_power_w * a.parked_core_s;
  e.other_cpu_j = m.core_busy_power_w * other_s;
  e.memory_j = m.dram_energy_j_per_byte * a.weight_bytes_read;
  // The same order of additions as energy.py: static + cores + memory.
  const double cores_j = e.busy_j + e.spin_j + e.parked_j + e.other_cpu_j;
  e.total_j = e.static_j + cores_j + e.memory_j;
  e.energy_kwh = e.total_j / 3.6e6;
  e.operational_g = e.energy_kwh * grid_g_per_kwh;
  e.total_g = e.operational_g + embodied_g;
  if (a.generated_tokens > 0)
    e.sci_g_per_1k_tokens = e.total_g / (double(a.generated_tokens) / 1000.0);
  return e;
}

}  // namespace fwa
