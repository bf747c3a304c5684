// SPDX-License-Identifier: Apache-2.0
// A C++ program with its own functions named like libfwassist internals (fwa::status_string,
// fwa::parse_cpu_feature_list, with the same signatures) and its own std:: template
// instances: linked against the static libfwassist it must build without a duplicate symbol,
// and each side must keep calling its own code.
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fwassist/fwassist.h"

namespace fwa {
enum class Status : int { ok = 0 };
const char* status_string(Status) { return "the program's own status_string"; }
uint64_t parse_cpu_feature_list(const char*) { return 42; }
}  // namespace fwa

int main() {
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) {
      std::printf("FAILED: %s\n", what);
      ++failures;
    }
  };
  expect(std::strcmp(fwa::status_string(fwa::Status::ok), "the program's own status_string") == 0,
         "the program's fwa::status_string");
  expect(fwa::parse_cpu_feature_list("none") == 42, "the program's fwa::parse_cpu_feature_list");
  // The library's names come from its own internals (fwa::status_name, the registry).
  expect(std::strcmp(fwa_status_string(FWA_ERR_BAD_MAGIC), "bad_magic") == 0,
         "fwa_status_string(FWA_ERR_BAD_MAGIC)");
  expect(std::strcmp(fwa_status_string(FWA_ERR_BAD_HANDLE), "bad_handle") == 0,
         "fwa_status_string(FWA_ERR_BAD_HANDLE)");
  char buf[256];
  size_t needed = 0;
  expect(fwa_kernel_choices(buf, sizeof buf, &needed) == FWA_OK && std::strstr(buf, "gemv_exact="),
         "fwa_kernel_choices");
  expect(fwa_model_get_info(nullptr, nullptr) == FWA_ERR_NULL_ARGUMENT, "fwa_model_get_info(NULL)");
  std::vector<std::string> words{"shared", "ptr"};
  auto own = std::make_shared<std::vector<std::string>>(words);
  expect(own->size() == 2, "the program's std:: instances");
  std::printf("symbol_clash: %s\n", failures ? "FAILED" : "the program and libfwassist.a each "
              "use their own fwa:: and std:: symbols");
  return failures ? 1 : 0;
}
