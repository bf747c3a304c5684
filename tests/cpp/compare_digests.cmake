# SPDX-License-Identifier: Apache-2.0
# ctest fwa_logits_digest: the logits and sample digests of the model in FWA_TEST_MODEL must be
# the same with every CPU feature the machine has and with none (FWA_CPU_FEATURES=none: the
# reference kernels). Usage: cmake -DTOOL=<fwa_logits_digest> [-DEMULATOR=...] -P this file
if(NOT DEFINED ENV{FWA_TEST_MODEL})
  message(FATAL_ERROR "set FWA_TEST_MODEL to an artifact (tests/cross/make_test_model.py)")
endif()
execute_process(COMMAND ${EMULATOR} ${TOOL} $ENV{FWA_TEST_MODEL}
                OUTPUT_VARIABLE best RESULT_VARIABLE best_status)
execute_process(COMMAND ${CMAKE_COMMAND} -E env FWA_CPU_FEATURES=none ${EMULATOR} ${TOOL}
                        $ENV{FWA_TEST_MODEL}
                OUTPUT_VARIABLE ref RESULT_VARIABLE ref_status)
if(NOT best_status EQUAL 0 OR NOT ref_status EQUAL 0)
  message(FATAL_ERROR "fwa_logits_digest failed (${best_status}, ${ref_status})")
endif()
if(NOT best STREQUAL ref)
  message(FATAL_ERROR "logits differ between the best kernels and the reference:\n"
          "${best}\nFWA_CPU_FEATURES=none:\n${ref}")
endif()
message(STATUS "identical digests with every feature and with none:\n${best}")
