#!/usr/bin/env bash
# The project's test command (README, .ci/run): format, lints, all test targets with
# the `integration` feature on, so the suites that talk to the real local services
# run too (and fail when a service is missing); start the services first with
#   deploy/local/stack.sh up
# Endpoints come from KAFKA_BROKERS / ES_URL; when unset and the local stack is
# running, they are taken from it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

phase() { printf '=== [%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

if [[ -z "${KAFKA_BROKERS:-}" || -z "${ES_URL:-}" ]]; then
    if deploy/local/stack.sh status >/dev/null 2>&1; then
        eval "$(deploy/local/stack.sh env)"
    else
        echo "note: local stack not running and KAFKA_BROKERS/ES_URL unset; integration tests will fail." >&2
        echo "      start it: deploy/local/stack.sh up && eval \"\$(deploy/local/stack.sh env)\"" >&2
    fi
fi
echo "KAFKA_BROKERS=${KAFKA_BROKERS:-<unset>} ES_URL=${ES_URL:-<unset>}"
# The stack script's own settings share the TAILSIFT_ prefix with the service's config
# env overrides (TAILSIFT_<SECTION>__<KEY>); keep them away from the tests.
unset TAILSIFT_CACHE TAILSIFT_MAVEN_REPO TAILSIFT_STACK_DIR TAILSIFT_JAVA_HOME TAILSIFT_ES_USER

phase "cargo fmt --check"
cargo fmt --check
phase "cargo clippy --all-targets --features integration -- -D warnings"
cargo clippy --all-targets --features integration -- -D warnings
phase "cargo test --all-targets --features integration --no-fail-fast"
cargo test --all-targets --features integration --no-fail-fast
phase "tests done"
