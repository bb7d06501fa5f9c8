#!/usr/bin/env bash
# The seeds' timeliness test (issue #12) on one local 3-broker cluster (`raftmq dev`, every
# send fsynced by a majority of 3 replicas): `raftmq bench scenario timeliness` with its
# defaults (COUNT messages of 128 B on 8 queues, sent synchronously by each producer
# concurrency in turn, consumed by 20 tasks pausing 1 ms per 2 messages, RocketMQ protocol),
# each round on a fresh topic. Prints each round's time from the first send to the last message
# processed, beside the consumers' own bound, and the brokers' CPU (user + system) per message.
#
# Usage: bench/timeliness.sh BINARY [PRODUCERS=64,128,256]
# Env: COUNT (2000000), OUT (/tmp/raftmq-timeliness), BASE (39781).
set -euo pipefail
BIN=$(realpath "$1")
PRODUCERS=${2:-64,128,256}
COUNT=${COUNT:-2000000}
OUT=${OUT:-/tmp/raftmq-timeliness}
BASE=${BASE:-39781}
mkdir -p "$OUT"

. "$(dirname "$0")/lib.sh"

start_cluster "$BIN" "$OUT/dev.txt"
IFS=, read -r -a rounds <<< "$PRODUCERS"
for p in "${rounds[@]}"; do
  before=$(broker_ticks)
  "$BIN" bench scenario timeliness --broker "$BROKER" --count "$COUNT" --producers "$p" --json > "$OUT/p$p.json" || true
  after=$(broker_ticks)
  python3 - "$OUT/p$p.json" "$((after - before))" "$TICKS" <<'PY'
import json, sys
path, ticks, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = [json.loads(l) for l in open(path) if l.strip().startswith("{")][-1]
secs = r["seconds"]
cpu_us = ticks / hz * 1e6 / max(r["processed"], 1)
done = f"{secs:7.1f} s" if secs else "not done"
print(f"producers {r['producers']:>4}: {done} to {r['count']} processed (consumers alone {r['consumer_bound_seconds']:.1f} s); "
      f"sends {r['sent'] / max(r['send_seconds'], 1e-9):7.0f}/s, {r['send_failures']} refused, {r['send_unknown']} unknown; "
      f"broker CPU {cpu_us:6.1f} us/msg")
PY
done
