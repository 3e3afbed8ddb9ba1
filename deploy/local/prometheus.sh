#!/usr/bin/env bash
# Builds Prometheus' promtool and server from the Go module proxy, unmodified, into the
# cache. promtool checks and unit-tests deploy/prometheus/rules/alerts.yml
# (tests/alert_rules.rs); the server is for running the rules against a live tailsift.
# Nothing of it is committed; only the binaries stay in the cache.
#
#   deploy/local/prometheus.sh build     # build once (cached), print promtool's path
#   deploy/local/prometheus.sh path      # print promtool's path if built (exit 1 if not)
#   deploy/local/prometheus.sh server    # print the server binary's path if built
#   deploy/local/prometheus.sh version   # the Prometheus module version this script pins
#
# Environment (all optional):
#   TAILSIFT_CACHE       cache root                        (default $HOME/.cache/tailsift)
#   PROMETHEUS_VERSION   github.com/prometheus/prometheus module version
#                        (default v0.316.0, which is Prometheus 3.16.0)
set -euo pipefail

CACHE="${TAILSIFT_CACHE:-$HOME/.cache/tailsift}"
VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
[[ "$VERSION" == v* ]] || VERSION="v$VERSION"
MODULE="github.com/prometheus/prometheus"
HOME_DIR="$CACHE/prometheus/$VERSION"
PROMTOOL="$HOME_DIR/bin/promtool"
SERVER="$HOME_DIR/bin/prometheus"

log() { printf '[prometheus %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[prometheus] ERROR: %s\n' "$*" >&2; exit 1; }

# The installed Go as it is (there is no toolchain download), no workspace from an
# enclosing directory.
export GOTOOLCHAIN=local GOWORK=off
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

built() { [[ -x "$PROMTOOL" && -x "$SERVER" ]] && "$PROMTOOL" --version >/dev/null 2>&1; }

build() {
    if built; then
        echo "$PROMTOOL"
        return 0
    fi
    command -v go >/dev/null 2>&1 || die "Go is missing (promtool builds from the Go module proxy)"
    mkdir -p "$HOME_DIR"
    # One build at a time, even when two test runs start together.
    exec 9>"$HOME_DIR/.lock"
    flock 9
    if built; then
        echo "$PROMTOOL"
        return 0
    fi
    local t0=$SECONDS
    log "building promtool and prometheus $VERSION ($(go env GOVERSION)) from the Go module proxy; the first build takes minutes"
    # Prometheus' go.mod has no replace directives, so `go install pkg@version` builds
    # it exactly as released. One invocation: both share most of their packages.
    GOBIN="$HOME_DIR/bin" CGO_ENABLED=0 nice -n 10 go install -trimpath -ldflags "-s -w" \
        "$MODULE/cmd/promtool@$VERSION" "$MODULE/cmd/prometheus@$VERSION" ||
        die "go install of $MODULE $VERSION failed (output above)"
    log "built $PROMTOOL and $SERVER in $((SECONDS - t0))s"
    echo "$PROMTOOL"
}

case "${1:-}" in
build) build ;;
path) built && echo "$PROMTOOL" ;;
server) built && echo "$SERVER" ;;
version) echo "$VERSION" ;;
*)
    echo "usage: $0 build|path|server|version" >&2
    exit 2
    ;;
esac
