#!/usr/bin/env bash
# The fault-injection suite (issue 5, tests/faults.rs) with one command:
#
#   bash scripts/faults.sh                 # every scenario (about 15 minutes)
#   bash scripts/faults.sh fast            # the CI-fast ones (fast_sigkill, fast_garbage, fast_restart_late_spans)
#   bash scripts/faults.sh sigkill es_outage   # libtest name filters, OR-ed
#   bash scripts/faults.sh shard_limit     # cluster.max_shards_per_node reached under load
#
# It builds tailsift (a DEBUG build: no --release on the shared build machines),
# brings up a Kafka + Elasticsearch stack of its OWN (deploy/local/stack.sh with
# state in .stack-faults and ports 39092/39093/39200, so the outage scenarios never
# stop a stack other people's tests use), runs the scenarios one at a time, prints
# the results table and stops the stack again if it started it.
#
# Environment (optional):
#   FAULTS_STACK_DIR        stack state dir            (default <repo>/.stack-faults)
#   FAULTS_KAFKA_PORT, FAULTS_KAFKA_CONTROLLER_PORT, FAULTS_ES_PORT
#                                                      (default 39092, 39093, 39200)
#   FAULTS_KEEP_STACK=1     leave the stack running afterwards (a stack that was
#                           already running is always left running)
#   FAULTS_USE_ENV=1        use KAFKA_BROKERS / ES_URL as given instead of a stack of
#                           its own; the outage scenarios then need FAULTS_STACK_DIR
#                           naming that stack, and refuse to run without it
#   FAULTS_SEED, FAULTS_KILL_CYCLES   repeat a run's random choices / more SIGKILLs
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

phase() { printf '=== [%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

started_stack=""
if [[ "${FAULTS_USE_ENV:-}" == 1 ]]; then
    : "${KAFKA_BROKERS:?FAULTS_USE_ENV=1 needs KAFKA_BROKERS}" "${ES_URL:?FAULTS_USE_ENV=1 needs ES_URL}"
else
    export FAULTS_STACK_DIR="${FAULTS_STACK_DIR:-$ROOT/.stack-faults}"
    stack() {
        TAILSIFT_STACK_DIR="$FAULTS_STACK_DIR" KAFKA_PORT="${FAULTS_KAFKA_PORT:-39092}" \
            KAFKA_CONTROLLER_PORT="${FAULTS_KAFKA_CONTROLLER_PORT:-39093}" \
            ES_PORT="${FAULTS_ES_PORT:-39200}" bash deploy/local/stack.sh "$@"
    }
    if stack status >/dev/null 2>&1; then
        phase "reusing the running stack in $FAULTS_STACK_DIR"
    else
        phase "starting a stack of its own in $FAULTS_STACK_DIR"
        stack down >/dev/null 2>&1 || true # a half-running one (e.g. after an outage test)
        [[ "${FAULTS_KEEP_STACK:-}" == 1 ]] || started_stack=1
        stack up >/dev/null
    fi
    eval "$(stack env)"
fi
stop_stack() {
    if [[ -n "$started_stack" ]]; then
        phase "stopping the stack it started"
        stack down >/dev/null 2>&1 || true
    fi
}
trap stop_stack EXIT
export KAFKA_BROKERS ES_URL
echo "KAFKA_BROKERS=$KAFKA_BROKERS ES_URL=$ES_URL FAULTS_STACK_DIR=${FAULTS_STACK_DIR:-<none>}"

# The suite's test binaries: the fault scenarios, Elasticsearch refusing writes
# (write block, auto_create_index, and the cluster-wide shard limit that only
# runs here, on a stack of its own), impossible span times, a bad span in a
# message and 16 MiB messages of tiny spans under a 256 MiB memory.limit.
SUITES="--test faults --test es_refusals --test span_times --test bad_spans --test big_messages"

# A profile of its own (= dev, a debug build): the target dir may be shared with
# other checkouts, whose builds would replace target/debug/tailsift under a
# running suite (seen: a child process that was another branch's binary).
export CARGO_PROFILE_FAULTS_INHERITS=dev
phase "building tailsift and the suite (debug, profile 'faults')"
cargo test --profile faults --features integration $SUITES --no-run
export FAULTS_WORK_DIR="${FAULTS_WORK_DIR:-$ROOT/.stack-faults-work}"
mkdir -p "$FAULTS_WORK_DIR"
export FAULTS_RESULTS="$FAULTS_WORK_DIR/results-$(date +%Y%m%d-%H%M%S).tsv"
: >"$FAULTS_RESULTS"

# The stack script's settings share the TAILSIFT_ prefix with the service's
# config overrides; keep them away from the tests and the services they spawn.
unset TAILSIFT_CACHE TAILSIFT_MAVEN_REPO TAILSIFT_STACK_DIR TAILSIFT_JAVA_HOME TAILSIFT_ES_USER

phase "running scenarios: ${*:-all}"
t0=$SECONDS
rc=0
cargo test --profile faults --features integration $SUITES -- --include-ignored --nocapture --test-threads 1 "$@" || rc=$?

phase "results ($((SECONDS - t0))s; debug build; rows also in $FAULTS_RESULTS)"
header="$(printf 'scenario\tcycles\tspans checked\tlost\tduplicated\tpeak RSS MiB\tmemory.limit MiB\tearly decisions\tDLQ\tsecs\tnote')"
if command -v column >/dev/null 2>&1; then
    { echo "$header"; cat "$FAULTS_RESULTS"; } | column -t -s $'\t'
else
    { echo "$header"; cat "$FAULTS_RESULTS"; }
fi
[[ $rc -eq 0 ]] || echo "FAILED (exit $rc): a scenario without a row failed before its check; see its messages above"
exit $rc
