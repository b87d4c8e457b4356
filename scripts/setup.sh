#!/usr/bin/env bash
# Installs what is missing (Debian 12 packages only) and builds sparta into build/.
#
# Usage: scripts/setup.sh [--tests] [extra cmake args...]
#   (default)  what `sparta` itself needs, then builds build/sparta
#   --tests    also what the test suite needs (GoogleTest, PyTorch for the
#              reference tests, clang + libFuzzer for the fuzz harnesses),
#              then builds everything, tests included
# apt's output goes to build/setup-apt.log; one line says what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
if [ "${1:-}" = "--tests" ]; then with_tests=1; shift; fi

# oneDNN's CMake config (dnnl-config.cmake) requires OpenCL headers and the ICD
# loader even for the CPU engine; --no-install-recommends would skip them.
# Open MPI: data-parallel training (mpirun -np N build/sparta train ...).
RUN_PACKAGES=(build-essential cmake pkg-config g++ libdnnl-dev ocl-icd-opencl-dev
  nlohmann-json3-dev libcli11-dev libtomlplusplus-dev libutf8proc-dev fortunes libopenmpi-dev openmpi-bin)
# python3-torch alone brings ~180 packages, so only the test command installs it.
TEST_PACKAGES=(libgtest-dev python3 python3-torch python3-numpy libopenblas0-pthread clang libclang-rt-14-dev libomp-14-dev)

wanted=("${RUN_PACKAGES[@]}")
[ $with_tests -eq 1 ] && wanted+=("${TEST_PACKAGES[@]}")
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

mkdir -p build
log=build/setup-apt.log
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${#missing[@]} missing package(s) (${missing[*]}), log in $log"
  before=$(dpkg-query -W -f='${db:Status-Abbrev}\n' 2>/dev/null | grep -c '^ii' || true)
  if ! { $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 15 "$log" >&2
    echo "setup: error: apt-get failed (whole log: $log)" >&2
    exit 1
  fi
  after=$(dpkg-query -W -f='${db:Status-Abbrev}\n' 2>/dev/null | grep -c '^ii' || true)
  echo "setup: installed ${#missing[@]} requested package(s) and $((after - before - ${#missing[@]})) dependencies"
else
  echo "setup: all $(( ${#wanted[@]} )) required packages are installed" | tee "$log"
fi

tests_flag=-DSPARTA_BUILD_TESTS=OFF
[ $with_tests -eq 1 ] && tests_flag=-DSPARTA_BUILD_TESTS=ON
if ! cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$tests_flag" "$@" >build/setup-cmake.log 2>&1; then
  tail -n 20 build/setup-cmake.log >&2
  echo "setup: error: cmake configuration failed (whole log: build/setup-cmake.log)" >&2
  exit 1
fi
cmake --build build -j"$(nproc)"
echo "setup: built build/sparta$([ $with_tests -eq 1 ] && echo ' and the tests')"
