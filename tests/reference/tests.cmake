# PyTorch reference tests: tests/reference/gpt_reference.py computes a small
# GPT's logits, loss, gradients and 10 AdamW steps in float64 with PyTorch and
# writes them to ${SPARTA_REFERENCE_DIR}/gpt_ref.safetensors; the C++ test
# sparta_reference_tests compares sparta against that file.
#
# Needs Debian's /usr/bin/python3 with python3-torch and python3-numpy
# (apt-get install python3-torch python3-numpy).

set(SPARTA_REFERENCE_PYTHON /usr/bin/python3)
set(SPARTA_REFERENCE_DIR ${CMAKE_BINARY_DIR}/reference)

if(NOT EXISTS ${SPARTA_REFERENCE_PYTHON})
  message(FATAL_ERROR "[tests/reference] ${SPARTA_REFERENCE_PYTHON} not found: the PyTorch reference "
                      "tests need Debian's python3 with python3-torch and python3-numpy "
                      "(apt-get install python3 python3-torch python3-numpy), or configure with "
                      "-DSPARTA_BUILD_TESTS=OFF")
endif()

# Importing torch takes a second or two, so a successful check is cached for
# this interpreter; a failed one is re-run at every configure.
if(NOT SPARTA_REFERENCE_TORCH_OK STREQUAL ${SPARTA_REFERENCE_PYTHON})
  execute_process(
    COMMAND ${SPARTA_REFERENCE_PYTHON} -c "import torch, numpy; print(torch.__version__)"
    RESULT_VARIABLE _sparta_torch_rc
    OUTPUT_VARIABLE _sparta_torch_version
    ERROR_VARIABLE _sparta_torch_err
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _sparta_torch_rc EQUAL 0)
    string(REGEX REPLACE ".*\n([^\n]+)\n*$" "\\1" _sparta_torch_last "${_sparta_torch_err}")
    message(FATAL_ERROR "[tests/reference] ${SPARTA_REFERENCE_PYTHON} cannot import torch and numpy "
                        "(${_sparta_torch_last}): install python3-torch and python3-numpy, or configure "
                        "with -DSPARTA_BUILD_TESTS=OFF")
  endif()
  message(STATUS "PyTorch reference tests: ${SPARTA_REFERENCE_PYTHON} with torch ${_sparta_torch_version}")
  set(SPARTA_REFERENCE_TORCH_OK ${SPARTA_REFERENCE_PYTHON} CACHE INTERNAL "python whose torch import succeeded")
endif()

# Generates ${SPARTA_REFERENCE_DIR}/gpt_ref.safetensors (and fails if the
# PyTorch model disagrees with the script's own NumPy/finite-difference checks).
add_test(NAME torch_reference_generate
         COMMAND ${SPARTA_REFERENCE_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/gpt_reference.py
                 --out ${SPARTA_REFERENCE_DIR})
set_tests_properties(torch_reference_generate PROPERTIES
  FIXTURES_SETUP torch_reference
  TIMEOUT 120
  ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1"
  LABELS reference)

# ---------------------------------------------------------------------------
# C++ consumer: sparta_reference_tests (tests/reference/test_gpt_reference.cpp)
# is declared below. It reads ${SPARTA_REFERENCE_DIR}/gpt_ref.safetensors and
# must carry FIXTURES_REQUIRED torch_reference so that ctest runs the
# generator first.
# ---------------------------------------------------------------------------
add_executable(sparta_reference_tests ${CMAKE_CURRENT_LIST_DIR}/test_gpt_reference.cpp)
target_link_libraries(sparta_reference_tests PRIVATE sparta_lib GTest::gtest)
add_test(NAME torch_reference_compare
         COMMAND sparta_reference_tests ${SPARTA_REFERENCE_DIR}/gpt_ref.safetensors)
set_tests_properties(torch_reference_compare PROPERTIES
  FIXTURES_REQUIRED torch_reference
  TIMEOUT 120
  ENVIRONMENT "OMP_NUM_THREADS=2"
  LABELS reference)

# ---------------------------------------------------------------------------
# Dynamic sparse attention: tests/reference/dsa_reference.py computes
# DsaAttention's selection, summary, out, lse and gradients in float64 from the
# equations in src/ops/attention_dsa.h (20 cases: causal/bidirectional, ragged
# T, summary on/off, full budget = dense, the coarse group step active, rank = "bound") and writes
# ${SPARTA_REFERENCE_DIR}/dsa_ref.safetensors; sparta_dsa_reference_tests
# (tests/reference/test_dsa_reference.cpp) compares sparta against it.
# ---------------------------------------------------------------------------
add_test(NAME torch_dsa_reference_generate
         COMMAND ${SPARTA_REFERENCE_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/dsa_reference.py
                 --out ${SPARTA_REFERENCE_DIR})
set_tests_properties(torch_dsa_reference_generate PROPERTIES
  FIXTURES_SETUP torch_dsa_reference
  TIMEOUT 120
  ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1"
  LABELS reference)

add_executable(sparta_dsa_reference_tests ${CMAKE_CURRENT_LIST_DIR}/test_dsa_reference.cpp)
target_link_libraries(sparta_dsa_reference_tests PRIVATE sparta_lib GTest::gtest)
add_test(NAME torch_dsa_reference_compare
         COMMAND sparta_dsa_reference_tests ${SPARTA_REFERENCE_DIR}/dsa_ref.safetensors)
set_tests_properties(torch_dsa_reference_compare PROPERTIES
  FIXTURES_REQUIRED torch_dsa_reference
  TIMEOUT 120
  ENVIRONMENT "OMP_NUM_THREADS=2"
  LABELS reference)
