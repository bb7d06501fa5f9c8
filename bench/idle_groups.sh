#!/usr/bin/env bash
# Idle cost of the broker process (docs/benchmarks.md): raftmq dev (3 brokers), 10 topics x 100
# queues (replication factor 3) = 1,000 groups; CPU of each broker over 20 s once every group has
# a leader and (unless WAIT_ASLEEP=0) every queue-group replica hibernates.
# Needs target/release/raftmq (scripts/raftmq builds it). Run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
R=target/release/raftmq
DIR=$(mktemp -d /tmp/raftmq-idle.XXXXXX)
BASE=41081
"$R" dev --brokers 3 --data-dir "$DIR/data" --base-port "$BASE" > "$DIR/dev.txt" 2>&1 &
DEV=$!
trap 'kill -INT $DEV 2>/dev/null; wait $DEV 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 1 120); do grep -q "^Try:" "$DIR/dev.txt" 2>/dev/null && break; sleep 0.5; done
for t in $(seq 0 9); do
  "$R" admin topic create "idle$t" --queues 100 --replication-factor 3 --broker "127.0.0.1:$BASE" --json > /dev/null
done
status() { "$R" admin cluster status --broker "127.0.0.1:$BASE" --json; }
# Wait until all 1,001 groups have a leader, then until (if hibernating) every replica hibernates.
for i in $(seq 1 240); do
  read -r groups led asleep replicas < <(status | python3 -c "
import json,sys; d=json.load(sys.stdin); g=d['groups']
print(len(g), sum(1 for x in g if x['leader_broker_id']), sum(1 for x in g for r in x['replicas'] if r['hibernating']), sum(len(x['replicas']) for x in g))")
  echo "t=$i groups=$groups led=$led hibernating=$asleep/$replicas"
  [[ $groups -ge 1001 && $led -ge 1001 && ( "${WAIT_ASLEEP:-1}" == 0 || $asleep -ge 3000 ) ]] && break
  sleep 1
done
pids=$(pgrep -f "raftmq broker --config $DIR" || true)
ticks() { for p in $pids; do awk '{print $14+$15}' /proc/$p/stat; done; }
a=($(ticks)); sleep 20; b=($(ticks))
hz=$(getconf CLK_TCK)
i=0; for p in $pids; do echo "pid $p: $(python3 -c "print(round(100*(${b[$i]}-${a[$i]})/$hz/20,1))") % of a core"; i=$((i+1)); done
