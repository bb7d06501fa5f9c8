#!/usr/bin/env bash
# Same-run A/B of two raftmq binaries on a local 3-broker cluster (`raftmq dev`), for changes to
# the IO path (issue #10 item 8: log and store IO off the async workers):
#   - c=1 latency and c=64 throughput, 1 KiB messages, one queue (the shape of queue_vs_peers.sh);
#   - a slow disk on one broker: broker 3's fdatasync delayed by DELAY_MS through the broker's
#     slow-fsync test mode while a load of 16 KiB messages goes to a 4-queue topic (enough for
#     broker 3 to roll segments, whose fsync is the one that used to block a worker); elections
#     are counted as the rise of every group's Raft term on brokers 1 and 2, whose disks are fine.
# The binaries alternate (A B A B ...) so that both see the same disk weather.
#
# Usage: bench/slow_disk_ab.sh A_BINARY B_BINARY [ROUNDS=2]
# Env: N1 (3000), N64 (50000), SLOW_COUNT (8000), DELAY_MS (300, within the slow-fsync nemesis's
# 50-500 ms), OUT (/tmp/raftmq-ab).
# Run on a quiet machine; record the output and ../shared/peers/disk_limits.sh beside it in
# docs/benchmarks.md.
set -euo pipefail
A=$(realpath "$1")
B=$(realpath "$2")
ROUNDS=${3:-2}
N1=${N1:-3000}
N64=${N64:-50000}
SLOW_COUNT=${SLOW_COUNT:-8000}
DELAY_MS=${DELAY_MS:-300}
OUT=${OUT:-/tmp/raftmq-ab}
BASE=${BASE:-39081}
mkdir -p "$OUT"

. "$(dirname "$0")/lib.sh"

terms() { # sum of raftmq_raft_term over every group, as brokers 1 and 2 report them
  local sum=0 port v
  for i in 1 2; do
    port=$((BASE + 200 + i - 1))
    v=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^raftmq_raft_term\{/{s+=$2} END{print s+0}')
    sum=$((sum + v))
  done
  echo "$sum"
}

one() { # label binary
  local label=$1 bin=$2
  start_cluster "$bin" "$OUT/$label.dev.txt" RAFTMQ_TESTING__FSYNC_DELAY_FILE=true
  local broker=$BROKER
  # A produce that leaves messages unacknowledged exits 1: its JSON says how many; go on.
  "$bin" bench produce --broker "$broker" --topic c1 --queues 1 --count "$N1" --size 1024 --concurrency 1 --json \
    > "$OUT/$label.c1.json" || true
  "$bin" bench produce --broker "$broker" --topic c64 --queues 1 --count "$N64" --size 1024 --concurrency 64 --json \
    > "$OUT/$label.c64.json" || true
  # Broker 3's disk slows down (`raftmq dev` gives broker N the data directory DIR/broker-N).
  local data3="$DIR/broker-3"
  # Create the topic (its groups' first elections) and let it settle before counting terms.
  "$bin" bench produce --broker "$broker" --topic slow --queues 4 --count 64 --size 16384 --concurrency 4 --json \
    > /dev/null 2>&1 || true
  local before after
  before=$(terms)
  echo "$DELAY_MS" > "$data3/testing-fsync-delay-ms"
  "$bin" bench produce --broker "$broker" --topic slow --queues 4 --count "$SLOW_COUNT" --size 16384 --concurrency 64 --json \
    > "$OUT/$label.slow.json" || true
  after=$(terms)
  echo 0 > "$data3/testing-fsync-delay-ms"
  echo "$label: terms on brokers 1 and 2 rose by $((after - before)) during the slow-disk load (broker 3 data: $data3)" \
    | tee "$OUT/$label.elections"
  for f in c1 c64 slow; do echo "$label $f $(cat "$OUT/$label.$f.json")"; done
  stop_cluster
}

for r in $(seq 1 "$ROUNDS"); do
  one "A$r" "$A"
  one "B$r" "$B"
done
