# Sourced by the bench scripts: one local 3-broker `raftmq dev` cluster at a time, stopped and
# removed on exit, and the CPU its broker processes used. Needs BASE (the first port).

DEV=
DIR=
stop_cluster() {
  if [ -n "$DEV" ]; then kill -INT "$DEV" 2>/dev/null || true; wait "$DEV" 2>/dev/null || true; DEV=; fi
  if [ -n "$DIR" ]; then rm -rf "$DIR"; DIR=; fi
}
trap stop_cluster EXIT

# start_cluster BINARY LOG [NAME=VALUE...]: a fresh cluster on BASE (its output in LOG, the
# environment given added), once it says it is ready (within 120 s); BROKER names its brokers.
start_cluster() {
  local bin=$1 log=$2
  shift 2
  DIR=$(mktemp -d /tmp/raftmq-bench.XXXXXX)
  env "$@" "$bin" dev --brokers 3 --data-dir "$DIR" --base-port "$BASE" > "$log" 2>&1 &
  DEV=$!
  for _ in $(seq 1 240); do
    grep -q "^Try:" "$log" 2>/dev/null && break
    sleep 0.5
  done
  grep -q "^Try:" "$log" || { echo "cluster not ready"; cat "$log"; exit 1; }
  BROKER="127.0.0.1:$BASE,127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2))"
}

# Clock ticks per second: the unit of broker_ticks.
TICKS=$(getconf CLK_TCK)
broker_ticks() { # user + system clock ticks of every broker process of this cluster
  local sum=0 pid
  for pid in $(pgrep -f "broker --config $DIR/" || true); do
    sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$sum"
}
