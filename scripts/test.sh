#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test. This is what CI runs
# (.ci/run). Stages, each in its own build folder:
#   build/           every test: unit, PyTorch reference, CLI end-to-end
#   build-asan/      the unit tests under AddressSanitizer + UBSan, then the
#                    CLI end-to-end tests against the sanitized sparta binary
#   build-portable/  the unit tests with baseline x86-64 kernels (no AVX2 /
#                    AVX-512 clones), the path a CPU without them takes, in a
#                    build without MPI (what a machine without Open MPI gets)
#   build-fuzz/      every libFuzzer harness for a fixed time (clang)
# A failing stage does not stop the later ones; the exit status is non-zero
# if any failed, and the last line sums the tests of all stages.
#
# Usage: scripts/test.sh [--quick]   (--quick: the first stage only)
set -uo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1
jobs=$(nproc)
passed=0
failed=0
failed_stages=()

# ctest's closing line: "100% tests passed, 0 tests failed out of 245"
count_ctest() {  # log stage
  local line p f
  line=$(grep -E '[0-9]+ tests failed out of [0-9]+' "$1" | tail -n 1)
  if [ -z "$line" ]; then
    failed=$((failed + 1)); failed_stages+=("$2"); return
  fi
  f=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/' <<<"$line")
  p=$(( $(sed -E 's/.* tests failed out of ([0-9]+).*/\1/' <<<"$line") - f ))
  passed=$((passed + p)); failed=$((failed + f))
  [ "$f" -eq 0 ] || failed_stages+=("$2")
}

stage() { echo; echo "==== test.sh: $* ===="; }

stage "install, build, every test (build/)"
scripts/setup.sh --tests || { echo "test.sh: error: set-up failed" >&2; exit 1; }
ctest --test-dir build --output-on-failure -j"$jobs" 2>&1 | tee build/ctest.log
count_ctest build/ctest.log "build"

# gtest's summary: "[  PASSED  ] 240 tests." and "[  FAILED  ] 2 tests, listed below:"
count_gtest() {  # log stage rc
  local p f
  p=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$1" | tail -n 1 | grep -oE '[0-9]+' | head -n 1)
  f=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$1" | tail -n 1 | grep -oE '[0-9]+' | head -n 1)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
  if [ "$3" -ne 0 ] || [ -z "$p" ]; then
    [ -n "$f" ] || failed=$((failed + 1))
    failed_stages+=("$2")
  fi
}

unit_stage() {  # folder description cmake-flags...
  local dir=$1 what=$2 rc; shift 2
  stage "$what ($dir/)"
  mkdir -p "$dir"
  if cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$dir/setup-cmake.log" 2>&1 &&
     cmake --build "$dir" -j"$jobs" --target sparta_tests >"$dir/build.log" 2>&1; then
    # The unit tests in one process (no CLI or PyTorch tests: build/ ran those).
    OMP_NUM_THREADS=2 "$dir/tests/sparta_tests" --gtest_brief=1 >"$dir/unit.log" 2>&1
    rc=$?
    grep -E '^\[  (PASSED|FAILED) |^\[==========\]|Failure|ERROR|runtime error' "$dir/unit.log" | tail -n 40
    count_gtest "$dir/unit.log" "$dir" $rc
  else
    tail -n 30 "$dir/setup-cmake.log" "$dir/build.log" 2>/dev/null
    failed=$((failed + 1)); failed_stages+=("$dir (build)")
  fi
}

if [ $quick -eq 0 ]; then
  unit_stage build-asan "unit tests under ASan + UBSan" -DSPARTA_SANITIZE=ON

  # The paths only the CLI takes (training runs, Ctrl-C, resume, checkpoints
  # on disk) under the sanitizers too. Leak checks stay with the unit tests.
  stage "CLI end-to-end tests against the ASan + UBSan binary (build-asan/)"
  if cmake --build build-asan -j"$jobs" --target sparta >>build-asan/build.log 2>&1; then
    SPARTA_TEST_SANITIZED=1 ASAN_OPTIONS=detect_leaks=0 \
      ctest --test-dir build-asan -R '^cli_' --output-on-failure -j"$jobs" 2>&1 | tee build-asan/cli.log
    count_ctest build-asan/cli.log "build-asan (CLI)"
  else
    tail -n 30 build-asan/build.log
    failed=$((failed + 1)); failed_stages+=("build-asan (CLI build)")
  fi
  # Also the build without MPI (single-process only), as a user without Open MPI gets.
  unit_stage build-portable "unit tests with portable kernels, without MPI" -DSPARTA_PORTABLE_KERNELS=ON -DSPARTA_MPI=OFF

  stage "fuzz harnesses, 30 s each (build-fuzz/)"
  if scripts/fuzz.sh --seconds 30 2>&1 | tee build/fuzz.log; then
    n=$(grep -c '^fuzz_.* no findings' build/fuzz.log || true)
    passed=$((passed + n))
  else
    failed=$((failed + 1)); failed_stages+=("fuzz")
  fi
fi

echo
[ ${#failed_stages[@]} -eq 0 ] || echo "test.sh: failed stages: ${failed_stages[*]}"
echo "tests: $passed passed, $failed failed"
[ ${#failed_stages[@]} -eq 0 ]
