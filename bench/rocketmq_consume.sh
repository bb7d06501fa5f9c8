#!/usr/bin/env bash
# RocketMQ 5's consumption beside the native API, and what each costs the brokers (issue #12):
# on one local 3-broker cluster (`raftmq dev`), per round a fresh 4-queue topic gets COUNT
# sends of 1 KiB at c=64 through RocketMQ's SendMessage, then is read whole three times: the
# native fetch (`bench consume`, no Raft entry), a native consumer group committing each fetch
# of 32 (`--read-batch 32 --commit-group`, one Raft entry per batch: Kafka's poll + commitSync),
# and as a RocketMQ SimpleConsumer group (`bench consume --protocol rocketmq`: ReceiveMessage of
# 32 and one AckMessage per batch, two Raft entries per batch), each at c=64. Beside each
# phase's msgs/s it prints the brokers' CPU (user + system, all three processes, from /proc)
# per message, so the receive path's cost reads against the send path's.
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

. "$(dirname "$0")/lib.sh"

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
  start_cluster "$BIN" "$OUT/dev$r.txt"
  T="consume$r"
  phase "round $r send (rocketmq)" produce --topic "$T" --queues 4 --count "$COUNT" --size 1024 --concurrency 64 --protocol rocketmq
  phase "round $r fetch (native)" consume --topic "$T" --count "$COUNT" --concurrency 64
  phase "round $r fetch+commit (native)" consume --topic "$T" --count "$COUNT" --concurrency 64 --read-batch 32 --commit-group native-g
  phase "round $r receive+ack (rocketmq)" consume --topic "$T" --count "$COUNT" --concurrency 64 --protocol rocketmq
  stop_cluster
done
