#!/usr/bin/env bash
# Per-hop profile of c=1 produce (docs/benchmarks.md): raftmq dev with raftmq::hop traces on,
# N sends at c=1, then bench/hop_profile.py over the three brokers' logs (left in $DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
R=target/release/raftmq
DIR=${DIR:-$(mktemp -d /tmp/raftmq-hops.XXXXXX)}
rm -rf "$DIR"; mkdir -p "$DIR"
BASE=39081
RUST_LOG=info,raftmq::hop=trace "$R" dev --brokers 3 --data-dir "$DIR/data" --base-port "$BASE" > "$DIR/dev.txt" 2>&1 &
DEV=$!
trap 'kill -INT $DEV 2>/dev/null; wait $DEV 2>/dev/null' EXIT
for _ in $(seq 1 120); do grep -q "^Try:" "$DIR/dev.txt" 2>/dev/null && break; sleep 0.5; done
"$R" bench produce --broker "127.0.0.1:$BASE" --topic hop --queues 1 --count ${N:-2000} --size 1024 --concurrency 1 --json > "$DIR/bench.json"
cat "$DIR/bench.json"
python3 "$(dirname "$0")/hop_profile.py" "$DIR"
