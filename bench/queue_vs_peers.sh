#!/usr/bin/env bash
# raftmq's produce benchmark on a local 3-broker cluster (`raftmq dev`), in the same shape as
# ../shared/peers/bench.py runs etcd: 1 KiB messages, one queue (one Raft group), closed loop at
# concurrency 1 and 64, each send awaiting its durable, replicated acknowledgement.
# Also reports messages per fdatasync on each broker, from its /metrics.
#
# Usage: bench/queue_vs_peers.sh [N1=3000] [N64=50000]; needs target/release/raftmq
# (scripts/raftmq builds it). Run on a quiet machine; run ../shared/peers/run_all.sh (etcd and
# the disk's raw fdatasync) just before or after, and record both in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
R=target/release/raftmq
N1=${N1:-3000}
N64=${N64:-50000}
BASE=${BASE:-38081}
DIR=$(mktemp -d /tmp/raftmq-bench.XXXXXX)
OUT=${OUT:-/tmp/raftmq-bench-results}
mkdir -p "$OUT"
"$R" dev --brokers 3 --data-dir "$DIR" --base-port "$BASE" > "$OUT/dev.txt" 2>&1 &
DEV=$!
trap 'kill -INT $DEV 2>/dev/null; wait $DEV 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 1 120); do
  grep -q "^Try:" "$OUT/dev.txt" 2>/dev/null && break
  sleep 0.5
done
B="127.0.0.1:$BASE"
scrape() { # broker index -> "sync_rounds sent_messages"
  local port=$((BASE + 200 + $1 - 1))
  curl -s "http://127.0.0.1:$port/metrics" | awk '
    /^raftmq_log_sync_rounds_total /{s=$2} /^raftmq_send_messages_total /{m=$2} END{print s+0, m+0}'
}
run() { # name count concurrency
  local before=() after=()
  for i in 1 2 3; do before[$i]=$(scrape "$i"); done
  "$R" bench produce --broker "$B" --topic "$1" --queues 1 --count "$2" --size 1024 --concurrency "$3" --json > "$OUT/$1.json"
  for i in 1 2 3; do after[$i]=$(scrape "$i"); done
  for i in 1 2 3; do
    read -r s0 m0 <<< "${before[$i]}"; read -r s1 m1 <<< "${after[$i]}"
    echo "$1 broker $i: fdatasync rounds $((s1 - s0)), messages acknowledged as leader $((m1 - m0))"
  done | tee "$OUT/$1.syncs"
  cat "$OUT/$1.json"; echo
}
run c1 "$N1" 1
run c64 "$N64" 64
