#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/fuzz_<name>.cpp) with clang, ASan and
# UBSan in build-fuzz/, then, for every harness (or the NAMEs given):
#   1. runs the committed seeds fuzz/corpus/<name>/ once as a regression test;
#   2. fuzzes for N seconds (default 30), with fuzz/<name>.dict if present.
# New corpus entries go to build-fuzz/corpus/<name>/ and crash reproducers to
# build-fuzz/artifacts/, never into the repository. Prints the executions per
# harness; exits non-zero if any harness crashed, leaked, hung, ran out of
# memory or got a sanitizer report. docs/fuzzing.md has more.
#
# Usage: scripts/fuzz.sh [--seconds N] [NAME...]     (NAME: safetensors, checkpoint, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=30
names=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
    --seconds=*) seconds="${1#--seconds=}"; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) names+=("${1#fuzz_}"); shift ;;
  esac
done
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --seconds must be a whole number, got '$seconds'" >&2; exit 2; }
if [[ ${#names[@]} -eq 0 ]]; then
  for f in fuzz/fuzz_*.cpp; do n=$(basename "$f" .cpp); names+=("${n#fuzz_}"); done
fi
for n in "${names[@]}"; do
  [[ -f "fuzz/fuzz_$n.cpp" ]] || { echo "fuzz.sh: no harness fuzz/fuzz_$n.cpp" >&2; exit 2; }
done

build=build-fuzz
if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S . -B $build -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSPARTA_PORTABLE_KERNELS=ON -DSPARTA_FUZZ=ON -DSPARTA_BUILD_TESTS=OFF -DSPARTA_MPI=OFF
fi
targets=()
for n in "${names[@]}"; do targets+=("fuzz_$n"); done
cmake --build $build -j"${FUZZ_BUILD_JOBS:-2}" --target "${targets[@]}"

# One thread: the harnesses are single-threaded parsers, and OpenMP worker
# threads would only make runs slower and less deterministic.
export OMP_NUM_THREADS=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
limits=(-rss_limit_mb=2048 -timeout=10)

failed=()
for n in "${names[@]}"; do
  bin=$build/fuzz/fuzz_$n
  seeds=fuzz/corpus/$n
  scratch=$build/corpus/$n
  artifacts=$build/artifacts
  mkdir -p "$scratch" "$artifacts"
  dict=()
  [[ -f fuzz/$n.dict ]] && dict=(-dict="fuzz/$n.dict")
  log=$build/fuzz_$n.log

  if compgen -G "$seeds/*" >/dev/null; then
    if ! "$bin" "${limits[@]}" -artifact_prefix="$artifacts/$n-" "$seeds"/* >"$log" 2>&1; then
      echo "fuzz_$n: FAILED on the committed seeds (log: $log)"
      tail -n 30 "$log"
      failed+=("$n")
      continue
    fi
  fi

  # The scratch folder comes first: libFuzzer writes new inputs to the first
  # corpus folder only, and reads the seeds from the second.
  set +e
  "$bin" "${limits[@]}" "${dict[@]}" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$artifacts/$n-" "$scratch" "$seeds" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
  if [[ $rc -ne 0 ]]; then
    echo "fuzz_$n: FAILED (exit $rc) after ${execs:-?} executions; reproducer in $artifacts/, log: $log"
    grep -m 5 -E 'ERROR: |runtime error: |==[0-9]+==' "$log" || tail -n 30 "$log"
    failed+=("$n")
  else
    echo "fuzz_$n: ${execs:-?} executions in ${seconds} s, no findings (corpus: $scratch)"
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz.sh: findings in: ${failed[*]}" >&2
  exit 1
fi
