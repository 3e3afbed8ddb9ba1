#!/usr/bin/env bash
# The backend matrix: the Elasticsearch-facing tests (the sink, the harness, retention,
# rollover, and the Jaeger Query proofs) against each search engine tailsift supports,
# one after the other, each on a stack of its own (deploy/local/stack.sh with its own
# state dir and ports; brought up, tested, brought down and deleted).
#
#   bash scripts/matrix.sh                       # the whole matrix
#   MATRIX="opensearch:2.19.6" bash scripts/matrix.sh
#
# Environment (all optional):
#   MATRIX               engine:version list (default below; the tested versions)
#   MATRIX_TESTS         cargo test targets   (default elasticsearch_sink harness_elasticsearch
#                                             retention rollover jaeger_query jaeger_trace_ids
#                                             jaeger_collector red_metrics)
#   MATRIX_DIR           where the stacks live (default <repo>/.stack-matrix)
#   MATRIX_KAFKA_PORT    Kafka port of every matrix stack (+1: its controller) (default 29092)
#   MATRIX_ES_PORT       first search-node port; entry i gets +i              (default 29200)
#   JAEGER_READERS       readers the Jaeger Query test checks (default v2; v2,v1 adds v1.66)
# Prints one line per entry with its result and time, and exits non-zero if any failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

MATRIX="${MATRIX:-elasticsearch:8.19.21 elasticsearch:9.2.0 opensearch:2.19.6}"
MATRIX_TESTS="${MATRIX_TESTS:-elasticsearch_sink harness_elasticsearch retention rollover jaeger_query jaeger_trace_ids jaeger_collector red_metrics}"
DIR="${MATRIX_DIR:-$ROOT/.stack-matrix}"
KAFKA_PORT="${MATRIX_KAFKA_PORT:-29092}"
ES_PORT0="${MATRIX_ES_PORT:-29200}"

phase() { printf '=== [matrix %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

test_args=()
for t in $MATRIX_TESTS; do test_args+=(--test "$t"); done

# The tests always run, never skip, here: they are the point of the matrix.
export TAILSIFT_JAEGER_QUERY=1

results=()
failed=0
i=0
t_all=$SECONDS
for entry in $MATRIX; do
    engine="${entry%%:*}"
    version="${entry#*:}"
    [[ "$engine" != "$entry" && -n "$version" ]] || { echo "bad MATRIX entry '$entry' (want engine:version)" >&2; exit 2; }
    stack="$DIR/$engine-$version"
    es_port=$((ES_PORT0 + i))
    i=$((i + 1))
    t0=$SECONDS
    phase "$engine $version: stack up in $stack (Kafka 127.0.0.1:$KAFKA_PORT, search node 127.0.0.1:$es_port)"
    stack_env=(TAILSIFT_STACK_DIR="$stack" SEARCH_ENGINE="$engine" ES_VERSION="$version"
        KAFKA_PORT="$KAFKA_PORT" KAFKA_CONTROLLER_PORT="$((KAFKA_PORT + 1))" ES_PORT="$es_port")
    status=0
    if env "${stack_env[@]}" deploy/local/stack.sh up </dev/null >/dev/null; then
        t_up=$((SECONDS - t0))
        phase "$engine $version: up in ${t_up}s; cargo test --features integration ${test_args[*]}"
        # (the stack script's TAILSIFT_* settings stay away from the tests, as in scripts/test.sh;
        # Jaeger Query's state goes under the entry's stack dir)
        env -u TAILSIFT_CACHE -u TAILSIFT_MAVEN_REPO -u TAILSIFT_JAVA_HOME -u TAILSIFT_ES_USER \
            TAILSIFT_STACK_DIR="$stack" KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" \
            ES_URL="http://127.0.0.1:$es_port" ES_EXPECT_VERSION="$version" \
            cargo test --features integration "${test_args[@]}" --no-fail-fast </dev/null || status=$?
    else
        status=$?
        t_up=$((SECONDS - t0))
    fi
    env "${stack_env[@]}" deploy/local/stack.sh down </dev/null >/dev/null 2>&1 || true
    # (the node's state may live under its user's /var/lib dir, linked from the stack)
    if [[ -L "$stack/es" ]]; then
        rm -rf "$(readlink -f "$stack/es")"
    fi
    rm -rf "$stack"
    dt=$((SECONDS - t0))
    if [[ $status -eq 0 ]]; then
        results+=("$(printf '%-14s %-9s passed  %4ss (stack up %ss)' "$engine" "$version" "$dt" "$t_up")")
    else
        results+=("$(printf '%-14s %-9s FAILED  %4ss (exit %s)' "$engine" "$version" "$dt" "$status")")
        failed=$((failed + 1))
    fi
    phase "${results[-1]}"
done

phase "summary (${MATRIX_TESTS// /, }; total $((SECONDS - t_all))s)"
printf '  %s\n' "${results[@]}"
[[ $failed -eq 0 ]]
