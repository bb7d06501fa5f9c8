#!/usr/bin/env bash
# RocketMQ 5's consumption beside the native API, and what each costs the brokers (issue #12):
# on one local 3-broker cluster (`raftmq dev`), per round a fresh 4-queue topic gets COUNT
# sends of 1 KiB at c=64 through RocketMQ's SendMessage, then is read whole twice: the native
# fetch (`bench consume`, no Raft entry) and as a RocketMQ SimpleConsumer group
# (`bench consume --protocol rocketmq`: ReceiveMessage of 32 and one AckMessage per batch,
# two Raft entries per batch), each at c=64. Beside each phase's msgs/s it prints the brokers'
# CPU (user + system, all three processes, from /proc) per message, so the receive path's cost
# reads against the send path's.
#
# Usage: bench/rocketmq_consume.sh BINARY [ROUNDS=2]
# Env: COUNT (100000), OUT (/tmp/raftmq-consume), BASE (39581).
set -euo pipefail
BIN=$(realpath "$1")
ROUNDS=${2:-2}
COUNT=${COUNT:-100000}
OUT=${OUT:-/tmp/raftmq-consume}
BASE=${BASE:-39581}
mkdir -p "$OUT"
TICKS=$(getconf CLK_TCK)

DEV=
DIR=
stop_cluster() {
  if [ -n "$DEV" ]; then kill -INT "$DEV" 2>/dev/null || true; wait "$DEV" 2>/dev/null || true; DEV=; fi
  if [ -n "$DIR" ]; then rm -rf "$DIR"; DIR=; fi
}
trap stop_cluster EXIT

broker_ticks() { # user + system clock ticks of every broker process of this cluster
  local sum=0 pid
  for pid in $(pgrep -f "broker --config $DIR/" || true); do
    sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$sum"
}

phase() { # label args...: runs `raftmq bench ARGS`, prints msgs/s and broker CPU µs per message
  local label=$1; shift
  local before after
  before=$(broker_ticks)
  "$BIN" bench "$@" --broker "$BROKER" --json > "$OUT/$label.json" || true
  after=$(broker_ticks)
  python3 - "$OUT/$label.json" "$label" "$((after - before))" "$TICKS" <<'PY'
import json, sys
path, label, ticks, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
r = [json.loads(l) for l in open(path) if l.strip().startswith("{")][-1]
n = r.get("acked") or r.get("consumed") or 0
lat = r.get("send_latency") or r.get("fetch_latency") or {}
cpu_us = ticks / hz * 1e6 / n if n else float("nan")
print(f"{label:28s} {n:>8} msgs {r['msgs_per_sec']:>10.0f} msgs/s  p50 {lat.get('p50_us', 0) / 1000:6.2f} ms  "
      f"p99 {lat.get('p99_us', 0) / 1000:6.2f} ms  broker CPU {cpu_us:6.1f} us/msg")
PY
}

for r in $(seq 1 "$ROUNDS"); do
  DIR=$(mktemp -d /tmp/raftmq-consume.XXXXXX)
  "$BIN" dev --brokers 3 --data-dir "$DIR" --base-port "$BASE" > "$OUT/dev$r.txt" 2>&1 &
  DEV=$!
  for _ in $(seq 1 240); do
    grep -q "^Try:" "$OUT/dev$r.txt" 2>/dev/null && break
    sleep 0.5
  done
  grep -q "^Try:" "$OUT/dev$r.txt" || { echo "cluster not ready"; cat "$OUT/dev$r.txt"; exit 1; }
  BROKER="127.0.0.1:$BASE,127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2))"
  T="consume$r"
  phase "round $r send (rocketmq)" produce --topic "$T" --queues 4 --count "$COUNT" --size 1024 --concurrency 64 --protocol rocketmq
  phase "round $r fetch (native)" consume --topic "$T" --count "$COUNT" --concurrency 64
  phase "round $r receive+ack (rocketmq)" consume --topic "$T" --count "$COUNT" --concurrency 64 --protocol rocketmq
  stop_cluster
done
