#!/bin/bash
# Data-parallel step time and gradient bytes per step for dist.compress =
# none, bf16 and q4, two processes training the bench GPT (configs/bench.toml,
# 12M parameters), on links of known speed:
#
#   shm        Open MPI's shared-memory transport (the default on one machine)
#   <rate>     MPI over TCP only, on the loopback of a private network
#              namespace whose traffic a token-bucket filter (tc tbf) holds
#              to <rate>, e.g. 1gbit or 100mbit
#
# Usage (as root: namespaces and tc need it):
#   bench/bench_dist.sh [--sparta build/sparta] [--links shm,1gbit,100mbit]
#                       [--modes none,bf16,q4] [--buckets 4] [--steps 8]
#                       [--json FILE]
#
# --buckets: dist.bucket_mb values to run (0 = one bucket after the whole
# backward; otherwise buckets exchanged while backward goes on), e.g. 0,4
# to measure what the overlap hides. Each run trains --steps steps; times
# are medians over the steps after the first two (start-up, first-touch
# allocation). Prints one row per link, mode and bucket size (wait ms: what
# the step waited for the exchange after its backward), then per link the
# step-time ratio none / q4 and the byte ratio, and per mode what the
# overlap gained. Needs iproute2 (ip, tc) and Open MPI (mpirun).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
sparta="$here/build/sparta"
links="shm,1gbit,100mbit"
modes="none,bf16,q4"
buckets="4"
steps=8
json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --sparta) sparta="$2"; shift 2 ;;
    --links) links="$2"; shift 2 ;;
    --modes) modes="$2"; shift 2 ;;
    --buckets) buckets="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_dist.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -x "$sparta" ] || { echo "bench_dist.sh: no sparta binary at '$sparta' (build it, or pass --sparta)" >&2; exit 1; }
command -v mpirun > /dev/null || { echo "bench_dist.sh: mpirun not found (install openmpi-bin)" >&2; exit 1; }
[ "$steps" -ge 3 ] 2> /dev/null || { echo "bench_dist.sh: --steps must be an integer >= 3, got '$steps'" >&2; exit 1; }
if [ "$links" != "shm" ]; then
  [ "$(id -u)" = 0 ] || { echo "bench_dist.sh: throttled links need root (ip netns, tc); run as root or --links shm" >&2; exit 1; }
  command -v tc > /dev/null && command -v ip > /dev/null || { echo "bench_dist.sh: ip and tc not found (install iproute2)" >&2; exit 1; }
fi

work=$(mktemp -d)
ns="sparta_bench_$$"
cleanup() {
  ip netns del "$ns" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export OMPI_MCA_btl_vader_single_copy_mechanism=none SPARTA_LOAD_WARNING=0
mpi=(mpirun --allow-run-as-root --oversubscribe -np 2)
results="$work/results.jsonl"

run_one() {  # link mode bucket_mb
  local link=$1 mode=$2 bucket=$3 out="$work/run_${1}_${2}_${3}"
  local args=(train "$here/configs/bench.toml" --quiet --force --set "train.steps=$steps" --set "train.warmup=1"
              --set "train.threads=1" --set "train.out=$out" --set "dist.compress=$mode" --set "dist.timeout_s=600"
              --set "dist.bucket_mb=$bucket")
  if [ "$link" = shm ]; then
    "${mpi[@]}" "$sparta" "${args[@]}" > "$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
  else
    ip netns exec "$ns" "${mpi[@]}" --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo \
      "$sparta" "${args[@]}" > "$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
  fi
  /usr/bin/python3 - "$out/metrics.jsonl" "$link" "$mode" "$bucket" >> "$results" <<'EOF'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])][2:]
print(json.dumps({"link": sys.argv[2], "mode": sys.argv[3], "bucket_mb": float(sys.argv[4]),
                  "step_ms": statistics.median(r["step_ms"] for r in recs),
                  "comm_ms": statistics.median(r["comm_ms"] for r in recs),
                  "wait_ms": statistics.median(r["comm_wait_ms"] for r in recs),
                  "comm_bytes": recs[-1]["comm_bytes"]}))
EOF
  tail -n 1 "$results" >&2
}

IFS=, read -ra link_list <<< "$links"
IFS=, read -ra mode_list <<< "$modes"
IFS=, read -ra bucket_list <<< "$buckets"
for link in "${link_list[@]}"; do
  if [ "$link" != shm ]; then
    ip netns del "$ns" 2> /dev/null || true
    ip netns add "$ns"
    ip netns exec "$ns" ip link set lo up
    # burst: at least rate / HZ, or the filter cannot reach its rate.
    ip netns exec "$ns" tc qdisc add dev lo root tbf rate "$link" burst 1mb latency 100ms
  fi
  for mode in "${mode_list[@]}"; do
    for bucket in "${bucket_list[@]}"; do run_one "$link" "$mode" "$bucket"; done
  done
done

/usr/bin/python3 - "$results" "$json" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'link':>8} {'compress':>8} {'bucket MB':>9} {'step ms':>9} {'comm ms':>9} {'wait ms':>9} {'MB sent/step':>13}")
for r in rows:
    print(f"{r['link']:>8} {r['mode']:>8} {r['bucket_mb']:9g} {r['step_ms']:9.1f} {r['comm_ms']:9.1f} "
          f"{r['wait_ms']:9.1f} {r['comm_bytes'] / 1e6:13.2f}")
by = {(r["link"], r["mode"], r["bucket_mb"]): r for r in rows}
sizes = list(dict.fromkeys(r["bucket_mb"] for r in rows))
for link in dict.fromkeys(r["link"] for r in rows):
    for b in sizes:
        if (link, "none", b) in by and (link, "q4", b) in by:
            n, q = by[(link, "none", b)], by[(link, "q4", b)]
            print(f"{link}, buckets of {b:g} MB: q4 steps {n['step_ms'] / q['step_ms']:.2f}x faster than none, "
                  f"{n['comm_bytes'] / q['comm_bytes']:.2f}x fewer bytes; a none step waits "
                  f"{100 * n['wait_ms'] / n['step_ms']:.0f}% of its time for the exchange")
    for mode in dict.fromkeys(r["mode"] for r in rows):
        one = by.get((link, mode, 0.0))
        for b in sizes:
            r = by.get((link, mode, b))
            if one and r and b > 0:
                print(f"{link}, {mode}: buckets of {b:g} MB overlapped with backward: step "
                      f"{one['step_ms']:.0f} -> {r['step_ms']:.0f} ms ({one['step_ms'] / r['step_ms']:.2f}x), "
                      f"wait {one['wait_ms']:.0f} -> {r['wait_ms']:.0f} ms")
if sys.argv[2]:
    with open(sys.argv[2], "w") as f:
        json.dump(rows, f, indent=2)
EOF
