#!/usr/bin/env bash
# The main job in one command: bring up the local stack (real Kafka + real
# Elasticsearch), run tailsift on generated traffic for a while, print what
# happened, and say how to look at the traces with Jaeger Query (v2).
#
#   bash scripts/demo.sh              # 30 s of traffic at 5000 spans/s
#   DEMO_SECONDS=120 DEMO_RATE=20000 bash scripts/demo.sh
#   DEMO_JAEGER=1 bash scripts/demo.sh   # also start Jaeger v2 Query as the viewer
#                                        # (built from the Go module proxy on first use)
#
# The stack stays up afterwards (stop it with deploy/local/stack.sh down).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_OF_TRAFFIC="${DEMO_SECONDS:-30}"
RATE="${DEMO_RATE:-5000}"
PORT="${DEMO_METRICS_PORT:-9464}"
RUN_ID="demo-$(date +%s)"
WORK="$ROOT/.stack/demo"
mkdir -p "$WORK"

log() { printf '[demo %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

log "starting the local stack (first run downloads Kafka and Elasticsearch)"
bash deploy/local/stack.sh up >&2
eval "$(bash deploy/local/stack.sh env)"

log "building tailsift (release)"
cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tailsift"

# The shipped config, pointed at the stack; a fresh group so the demo reads
# only its own traffic; shorter windows so decisions come quickly.
export TAILSIFT_KAFKA__BROKERS="$KAFKA_BROKERS"
export TAILSIFT_KAFKA__GROUP_ID="$RUN_ID"
export TAILSIFT_ELASTICSEARCH__URLS="$ES_URL"
export TAILSIFT_SAMPLING__DECISION_WAIT=5s
export TAILSIFT_SAMPLING__ROOT_IDLE=1s
export TAILSIFT_METRICS__LISTEN="127.0.0.1:$PORT"
# The local stack is one Elasticsearch node: a replica could never be placed.
export TAILSIFT_ELASTICSEARCH__REPLICAS=0
unset TAILSIFT_KAFKA__DEAD_LETTER_TOPIC

# A topic of its own per run, so the figures are this run's alone (the
# broker creates it with 6 partitions on first use).
TOPIC="jaeger-spans-$RUN_ID"
export TAILSIFT_KAFKA__TOPIC="$TOPIC"
KAFKA_TOPIC="$TOPIC" bash deploy/local/stack.sh up >/dev/null   # idempotent; creates the topic
"$BIN" check-config config/tailsift.yaml >&2
"$BIN" run --config config/tailsift.yaml >"$WORK/tailsift.log" 2>&1 &
TS_PID=$!
trap 'kill -TERM $TS_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -fsS "127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  kill -0 $TS_PID 2>/dev/null || { tail -20 "$WORK/tailsift.log" >&2; exit 1; }
  sleep 0.5
done
log "tailsift ready (metrics on http://127.0.0.1:$PORT/metrics, log $WORK/tailsift.log)"

log "generating $RATE spans/s for ${SECONDS_OF_TRAFFIC}s"
START=$(date +%s.%N)
"$BIN" loadgen --brokers "$KAFKA_BROKERS" --topic "$TOPIC" --rate "$RATE" \
  --duration "${SECONDS_OF_TRAFFIC}s" --seed "$(date +%s)" --json >"$WORK/loadgen.json"

SPANS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["spans"])' "$WORK/loadgen.json")
TRACES=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["traces"])' "$WORK/loadgen.json")
log "waiting until tailsift decided all $TRACES traces"
for _ in $(seq 1 240); do
  DECIDED=$(curl -fsS "127.0.0.1:$PORT/metrics" | awk '/^tailsift_decisions_total/ {s+=$2} END {print s+0}')
  [ "${DECIDED%.*}" -ge "$TRACES" ] && break
  sleep 0.5
done
END=$(date +%s.%N)
sleep 2
curl -fsS -XPOST "$ES_URL/jaeger-span-*/_refresh" >/dev/null

python3 - "$WORK/loadgen.json" "$PORT" "$ES_URL" "$START" "$END" <<'PY'
import json, sys, urllib.request
truth = json.load(open(sys.argv[1]))
port, es, start, end = sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
kept, dropped, consumed = {}, 0, 0
for line in metrics.splitlines():
    if line.startswith("tailsift_decisions_total{"):
        labels, value = line.rsplit(" ", 1)
        policy = labels.split('policy="')[1].split('"')[0]
        if 'outcome="kept"' in labels:
            kept[policy] = kept.get(policy, 0) + int(float(value))
        else:
            dropped += int(float(value))
    if line.startswith("tailsift_consumed_spans_total{"):
        consumed += int(float(line.rsplit(" ", 1)[1]))
docs = json.load(urllib.request.urlopen(f"{es}/jaeger-span-*/_count"))["count"]
rows = [
    ("spans generated", truth["spans"]),
    ("traces generated", truth["traces"]),
    ("  with an error", truth["error_traces"]),
    ("  slow (>= 1 s)", truth["slow_traces"]),
    ("spans consumed by tailsift", consumed),
]
rows += [(f"traces kept by '{p}'", n) for p, n in sorted(kept.items())]
rows += [
    ("traces dropped", dropped),
    ("span documents in Elasticsearch (all runs)", docs),
    ("throughput (spans/s, generation to decision)", int(consumed / max(end - start, 0.001))),
]
width = max(len(r[0]) for r in rows)
print()
for name, value in rows:
    print(f"  {name:<{width}}  {value:>10}")
print()
PY

if [[ "${DEMO_JAEGER:-0}" == 1 ]]; then
    log "starting Jaeger v2 Query on the indices (the first run builds it: minutes)"
    ES_URL="$ES_URL" bash deploy/local/jaeger-query.sh start >/dev/null
    cat <<EOF
Jaeger v2 Query is up at http://127.0.0.1:16686 (its HTTP API; a binary built from the Go
module has no UI assets and shows a placeholder page: the full UI is in docker-compose.yml)
  curl -s 'http://127.0.0.1:16686/api/services'
  curl -s 'http://127.0.0.1:16686/api/traces?service=svc-frontend&tags=%7B%22error%22%3A%22true%22%7D&limit=5'
Stop it: bash deploy/local/jaeger-query.sh stop; the stack: deploy/local/stack.sh down
EOF
else
    cat <<EOF
Look at the traces with Jaeger v2 Query (built from the Go module proxy on first use):
  bash deploy/local/jaeger-query.sh start    # HTTP API on http://127.0.0.1:16686 (UI: docker-compose.yml)
  curl -s 'http://127.0.0.1:16686/api/services'
  curl -s 'http://127.0.0.1:16686/api/traces?service=svc-frontend&tags=%7B%22error%22%3A%22true%22%7D&limit=5'
(JAEGER_READER=v1 starts the classic v1.66 jaeger-query instead.)
Stop everything: deploy/local/stack.sh down
EOF
fi
