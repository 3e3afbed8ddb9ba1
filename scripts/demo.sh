#!/usr/bin/env bash
# The main job in one command: bring up the local stack (real Kafka + real
# Elasticsearch), run tailsift on generated traffic for a while, print what
# happened, and say how to look at the traces with Jaeger Query (v2).
#
#   bash scripts/demo.sh              # 30 s of traffic at 5000 spans/s
#   DEMO_SECONDS=120 DEMO_RATE=20000 bash scripts/demo.sh
#   DEMO_JAEGER=1 bash scripts/demo.sh   # also start Jaeger v2 Query as the viewer
#                                        # (built from the Go module proxy on first use)
#   DEMO_BIN=path/to/tailsift bash scripts/demo.sh   # use that binary, no build
#
# Every long step shows its progress: the stack's downloads and start, cargo's
# build, the traffic, the wait for decisions. The summary ends with a check
# against the generator's ground truth; the script exits 1 if it fails.
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

if [[ -n "${DEMO_BIN:-}" ]]; then
  BIN="$DEMO_BIN"
else
  log "building tailsift (release; the first build compiles ~300 crates, about 10 minutes on 2 cores)"
  cargo build --release
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tailsift"
fi

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
# Indices of its own too, so the ground-truth check counts this run's documents.
export TAILSIFT_ELASTICSEARCH__INDEX_PREFIX="$RUN_ID"
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
  --duration "${SECONDS_OF_TRAFFIC}s" --seed "$(date +%s)" --json \
  --truth "$WORK/truth.jsonl" >"$WORK/loadgen.json" &
GEN_PID=$!
while kill -0 $GEN_PID 2>/dev/null; do
  sleep 5
  kill -0 $GEN_PID 2>/dev/null || break
  CONSUMED=$(curl -fsS "127.0.0.1:$PORT/metrics" | awk '/^tailsift_consumed_spans_total/ {s+=$2} END {printf "%d", s}')
  log "  ... $(( $(date +%s) - ${START%.*} ))s of ${SECONDS_OF_TRAFFIC}s, $CONSUMED spans consumed so far"
done
wait $GEN_PID

SPANS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["spans"])' "$WORK/loadgen.json")
TRACES=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["traces"])' "$WORK/loadgen.json")
log "waiting until tailsift decided all $TRACES traces"
for i in $(seq 1 240); do
  DECIDED=$(curl -fsS "127.0.0.1:$PORT/metrics" | awk '/^tailsift_decisions_total/ {s+=$2} END {print s+0}')
  [ "${DECIDED%.*}" -ge "$TRACES" ] && break
  (( i % 10 == 0 )) && log "  ... $DECIDED of $TRACES traces decided"
  sleep 0.5
done
END=$(date +%s.%N)
# Kept spans are written after their decision: wait until the sink queue is empty
# and the count of indexed documents stands still.
log "waiting until Elasticsearch acknowledged the kept spans"
LAST=-1
for _ in $(seq 1 240); do
  METRICS=$(curl -fsS "127.0.0.1:$PORT/metrics")
  QUEUED=$(awk '/^tailsift_sink_queue_bytes/ {s+=$2} END {printf "%d", s}' <<<"$METRICS")
  INDEXED=$(awk '/^tailsift_es_documents_total\{.*result="indexed"/ {s+=$2} END {printf "%d", s}' <<<"$METRICS")
  [[ "$QUEUED" -eq 0 && "$INDEXED" -eq "$LAST" ]] && break
  LAST=$INDEXED
  sleep 1
done
SPAN_INDICES="$RUN_ID-jaeger-span-*"
curl -fsS -XPOST "$ES_URL/$SPAN_INDICES/_refresh" >/dev/null

python3 - "$WORK/loadgen.json" "$PORT" "$ES_URL" "$START" "$END" "$SPAN_INDICES" \
  "$WORK/truth.jsonl" config/tailsift.yaml <<'PY'
import json, math, re, sys, urllib.request
truth = json.load(open(sys.argv[1]))
port, es, start, end = sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
indices, truth_file, config = sys.argv[6], sys.argv[7], sys.argv[8]
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
docs = json.load(urllib.request.urlopen(f"{es}/{indices}/_count"))["count"]
rows = [
    ("spans generated", truth["spans"]),
    ("traces generated", truth["traces"]),
    ("  with an error", truth["error_traces"]),
    ("  slow (>= 1 s)", truth["slow_traces"]),
    ("spans consumed by tailsift", consumed),
]
rows += [(f"traces kept by '{p}'", n) for p, n in sorted(kept.items()) if n]
rows += [
    ("traces dropped", dropped),
    ("span documents in Elasticsearch", docs),
    ("throughput (spans/s, generation to decision)", int(consumed / max(end - start, 0.001))),
]
width = max(len(r[0]) for r in rows)
print()
for name, value in rows:
    print(f"  {name:<{width}}  {value:>10}")
print()


def stored_per_trace():
    """Span documents per trace ID, paged through a composite aggregation."""
    counts, after = {}, None
    while True:
        agg = {"size": 5000, "sources": [{"t": {"terms": {"field": "traceID"}}}]}
        if after:
            agg["after"] = after
        body = json.dumps({"size": 0, "aggs": {"by": {"composite": agg}}}).encode()
        req = urllib.request.Request(f"{es}/{indices}/_search", body,
                                     {"Content-Type": "application/json"})
        by = json.load(urllib.request.urlopen(req))["aggregations"]["by"]
        for b in by["buckets"]:
            counts[b["key"]["t"]] = b["doc_count"]
        after = by.get("after_key")
        if not by["buckets"] or not after:
            return counts


stored = stored_per_trace()
traces = [json.loads(line) for line in open(truth_file)]
must = [t for t in traces if t["error"] or t["slow"]]
whole = sum(1 for t in must if stored.get(t["trace_id"]) == t["spans"])
spans_of = {t["trace_id"]: t["spans"] for t in traces}
overfull = sum(1 for tid, n in stored.items() if n > spans_of.get(tid, 0))
partial = sum(1 for tid, n in stored.items() if n < spans_of.get(tid, 0))
rest = [t for t in traces if not (t["error"] or t["slow"])]
share = sum(1 for t in rest if t["trace_id"] in stored) / max(len(rest), 1)
pct = float(re.search(r"sampling_percentage:\s*([0-9.]+)", open(config).read()).group(1)) / 100
# Probabilistic sampling hashes trace IDs: a binomial share, allowed 4 sigma.
tolerance = 4 * math.sqrt(pct * (1 - pct) / max(len(rest), 1)) + 0.005
checks = [
    (f"error and slow traces kept whole ({whole} of {len(must)})", whole == len(must)),
    (f"probabilistic share of the rest {share:.1%} (configured {pct:.0%})",
     abs(share - pct) <= tolerance),
    (f"traces with more documents than spans (duplicates): {overfull}", overfull == 0),
    (f"kept traces missing spans: {partial}", partial == 0),
]
print("  check against the generator's ground truth:")
for name, ok in checks:
    print(f"    {'ok  ' if ok else 'FAIL'}  {name}")
print()
if not all(ok for _, ok in checks):
    sys.exit(1)
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
