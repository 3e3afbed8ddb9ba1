#!/usr/bin/env bash
# The end-to-end benchmark, in one command: builds tailsift and the harness (release),
# builds the OpenTelemetry Collector and Jaeger v2 once (cached), loads a fresh
# 6-partition topic with `tailsift loadgen`, runs every contender one after the other and
# prints the table; the table also goes to benches/e2e/results.md. See
# benches/e2e/README.md.
#
#   scripts/bench.sh            # full run: 250,000 traces (~2M spans)
#   scripts/bench.sh --quick    # smoke run: 25,000 traces (~200k spans)
#   scripts/bench.sh --traces N [--repeat N] [--no-otel] [--no-jaeger] [--no-es] [--kill] [--keep]
#
# --kill also SIGKILLs tailsift and Jaeger v2 once each mid-run and counts the spans lost.
#
# Services: KAFKA_BROKERS / ES_URL when set; else the local stack
# (deploy/local/stack.sh) if it runs; else it is started here and stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

TRACES=250000
LABEL=full
OTEL=1
JAEGER=1
ES=1
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
    --quick) TRACES=25000 LABEL=quick ;;
    --traces) TRACES="$2" LABEL="traces-$2"; shift ;;
    --no-otel) OTEL=0 ;;
    --no-jaeger) JAEGER=0 ;;
    --kill) EXTRA+=(--kill) ;;
    --no-es) ES=0 ;;
    --keep) EXTRA+=(--keep) ;;
    --repeat) EXTRA+=(--repeat "$2"); shift ;;
    *) echo "usage: $0 [--quick] [--traces N] [--repeat N] [--no-otel] [--no-jaeger] [--no-es] [--kill] [--keep]" >&2; exit 2 ;;
    esac
    shift
done

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- services ---------
STARTED_STACK=0
answers() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
if [[ -z "${KAFKA_BROKERS:-}" || ( $ES == 1 && -z "${ES_URL:-}" ) ]]; then
    if ! bash deploy/local/stack.sh status >/dev/null 2>&1; then
        log "starting the local stack (stopped again on exit)"
        bash deploy/local/stack.sh up >&2
        STARTED_STACK=1
    fi
    eval "$(bash deploy/local/stack.sh env)"
fi
stop_stack() { [[ $STARTED_STACK == 1 ]] && bash deploy/local/stack.sh down >&2 || true; }
trap stop_stack EXIT
answers "${KAFKA_BROKERS%%,*}" || { log "Kafka does not answer on $KAFKA_BROKERS"; exit 1; }
log "Kafka $KAFKA_BROKERS${ES_URL:+, Elasticsearch $ES_URL}"

# ---------------------------------------------------------------- builds -----------
# The `e2e` profile is release in its own subdirectory, so that a release build of
# another checkout sharing CARGO_TARGET_DIR never stands in for this one.
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
log "building tailsift and the harness (cargo --profile e2e)"
cargo build --profile e2e --bin tailsift --example e2e >&2
RUN_DIR="$TARGET/e2e-runs/$(date +%Y%m%d-%H%M%S)-$LABEL"
mkdir -p "$RUN_DIR/bin"
# Copies: a concurrent build must not swap the binaries in the middle of a run.
cp "$TARGET/e2e/tailsift" "$TARGET/e2e/examples/e2e" "$RUN_DIR/bin/"

ARGS=(--tailsift "$RUN_DIR/bin/tailsift" --brokers "$KAFKA_BROKERS" --traces "$TRACES"
    --label "$LABEL" --out "$RUN_DIR" --markdown "$ROOT/benches/e2e/results.md"
    --kafka-version "${KAFKA_VERSION:-$(sed -n 's/^KAFKA_VERSION="\${KAFKA_VERSION:-\(.*\)}"$/\1/p' deploy/local/stack.sh)}")
if [[ $OTEL == 1 ]]; then
    ARGS+=(--otelcol "$(bash deploy/local/otelcol.sh build)"
        --collector-version "$(bash deploy/local/otelcol.sh version)")
fi
if [[ $ES == 1 ]]; then
    ARGS+=(--es-url "$ES_URL")
    # Jaeger v2 writes to Elasticsearch: it needs it.
    if [[ $JAEGER == 1 ]]; then
        JAEGER_BIN="$(bash deploy/local/jaeger-query.sh bin)"
        ARGS+=(--jaeger "$JAEGER_BIN" --jaeger-version "$("$JAEGER_BIN" version 2>/dev/null |
            sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -n1)")
    fi
fi

# ---------------------------------------------------------------- run --------------
log "running; configs, logs and results.json in $RUN_DIR"
# TAILSIFT_* are tailsift's config overrides; the stack script's settings share the prefix.
unset TAILSIFT_CACHE TAILSIFT_MAVEN_REPO TAILSIFT_STACK_DIR TAILSIFT_JAVA_HOME TAILSIFT_ES_USER
"$RUN_DIR/bin/e2e" run "${ARGS[@]}" "${EXTRA[@]}"
