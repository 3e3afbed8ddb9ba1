#!/usr/bin/env bash
# An UNMODIFIED Jaeger Query, built from the Go module proxy and run as a plain process on
# 127.0.0.1 against the local Elasticsearch/OpenSearch. It is the compatibility proof for
# tailsift's output: whatever tailsift writes must come back through this binary's HTTP
# API (and hence the Jaeger UI). Two readers:
#   v2 (default, the reader of record): the `jaeger` binary (Jaeger v2, an OpenTelemetry
#      Collector distribution) with only its `jaeger_query` and `jaeger_storage`
#      extensions: a query-only config, written by this script, with an
#      `elasticsearch:` or `opensearch:` backend on the same indices.
#   v1 (optional second reader): the classic `jaeger-query` binary of Jaeger 1.x.
#
#   deploy/local/jaeger-query.sh build    # build into the cache (first run only)
#   deploy/local/jaeger-query.sh bin      # build if needed, print the binary's path
#   deploy/local/jaeger-query.sh start    # build if needed, start, wait for /api/services
#   deploy/local/jaeger-query.sh stop     # stop exactly the processes `start` started
#   deploy/local/jaeger-query.sh status   # running? (exit 0 only if it is)
#   deploy/local/jaeger-query.sh env      # `eval "$(deploy/local/jaeger-query.sh env)"`
#
# How it is built: `go mod download` fetches the module source of
# github.com/jaegertracing/jaeger@$JAEGER_VERSION; a copy of it is the main module for
# `go build ./cmd/jaeger` (v2) or `go build ./cmd/query` (v1), so the `replace`
# directives in Jaeger's go.mod apply (which is why a plain `go install ...@version`
# fails). Nothing is patched; the source copy is deleted after the build and only the
# binary stays in the cache. Module v1.75.0 is Jaeger v2.12.0 (the module keeps v1.x
# tags; the binaries say v2).
#
# Elasticsearch root endpoint: the integ-test zip of Elasticsearch that
# deploy/local/stack.sh runs has no rest-root module (`GET /` and `HEAD /` answer 405).
# v2 is then given the server's major version (read from `GET /_nodes/_local`) and
# `disable_health_check: true`, and talks to the node directly. v1's client
# (olivere/elastic) refuses to start unless `HEAD /` answers 2xx, so for v1 only this
# script runs a tiny pass-through proxy (es-root-shim, built from the Go source embedded
# below) that answers `HEAD /` and `GET /` from `GET /_nodes/_local` and forwards every
# other request unchanged. OpenSearch has `GET /`; both readers use it directly.
#
# Environment (all optional):
#   TAILSIFT_CACHE            build cache                     (default $HOME/.cache/tailsift)
#   TAILSIFT_STACK_DIR        state, logs, PIDs               (default <repo>/.stack)
#   JAEGER_READER             v2 | v1                         (default v2)
#   JAEGER_VERSION            jaeger module version           (default v1.75.0 = Jaeger v2.12.0
#                                                              for v2, v1.66.0 for v1)
#   JAEGER_BUILD_JOBS         go build -p                     (default 2)
#   ES_URL                    Elasticsearch / OpenSearch      (default http://127.0.0.1:9200)
#   ES_INDEX_PREFIX           index prefix                    (default empty; Jaeger adds '-')
#   ES_USE_ALIASES            true: read <prefix>jaeger-span-read and jaeger-service-read
#                             (tailsift's alias mode, `tailsift rollover`) (default false)
#   JAEGER_QUERY_ES_VERSION   server major version (0 = auto) (default 0)
#   JAEGER_QUERY_PORT         HTTP API/UI port                (default 16686)
#   JAEGER_QUERY_GRPC_PORT    gRPC API port                   (default 16685)
#   JAEGER_QUERY_ADMIN_PORT   admin port: v1 health/metrics, v2 Prometheus metrics
#                                                             (default 16687)
#   JAEGER_QUERY_NAME         instance name: pid/log file names, lets a test run its own
#                             instance next to a developer's   (default jaeger-query)
#   JAEGER_QUERY_ARGS         v1 only: extra flags for jaeger-query (default empty)
#   JAEGER_QUERY_PROMETHEUS_URL  v2 only: a Prometheus server as the metrics backend of the
#                             Monitor tab (SPM), with the spanmetrics connector's normalized
#                             names (default: none, no Monitor tab)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${TAILSIFT_CACHE:-$HOME/.cache/tailsift}"
JCACHE="$CACHE/jaeger"
STACK="${TAILSIFT_STACK_DIR:-$ROOT/.stack}"
READER="${JAEGER_READER:-v2}"
case "$READER" in
v2) JAEGER_VERSION="${JAEGER_VERSION:-v1.75.0}" ;;
v1) JAEGER_VERSION="${JAEGER_VERSION:-v1.66.0}" ;;
*) echo "JAEGER_READER must be v2 or v1, not '$READER'" >&2; exit 2 ;;
esac
[[ "$JAEGER_VERSION" == v* ]] || JAEGER_VERSION="v$JAEGER_VERSION"
JAEGER_MODULE="github.com/jaegertracing/jaeger"
BUILD_JOBS="${JAEGER_BUILD_JOBS:-2}"
NAME="${JAEGER_QUERY_NAME:-jaeger-query}"
[[ "$NAME" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "JAEGER_QUERY_NAME must match [A-Za-z0-9._-]+" >&2; exit 2; }

if [[ "$READER" == v2 ]]; then
    BIN="$JCACHE/jaeger-$JAEGER_VERSION"
    MAIN_PKG=./cmd/jaeger
else
    BIN="$JCACHE/jaeger-query-$JAEGER_VERSION"
    MAIN_PKG=./cmd/query
fi
SHIM_BIN="$JCACHE/es-root-shim-2" # bump when its embedded source changes
STATE="$STACK/$NAME"
PIDFILE="$STACK/$NAME.pid"
SHIM_PIDFILE="$STACK/$NAME-es-shim.pid"
CONF="$STACK/$NAME.env"

log() { printf '[jaeger-query %s %s] %s\n' "$READER" "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[jaeger-query] ERROR: %s\n' "$*" >&2; exit 1; }

need_cmd() { # $1 command, $2 how to get it
    command -v "$1" >/dev/null 2>&1 || die "'$1' is missing. $2"
}

# The go command, never downloading a toolchain (there is no internet for that), with
# no workspace from an enclosing directory interfering.
# (GOFLAGS from the environment replaces `go env -w GOFLAGS=...`, so keep those.)
gocmd() {
    local flags
    flags="$(GOTOOLCHAIN=local go env GOFLAGS)"
    GOTOOLCHAIN=local GOWORK=off GOFLAGS="${flags:+$flags }-mod=mod" go "$@"
}

check_go() {
    need_cmd go "Install Go >= 1.23 (https://go.dev/dl/) or put it on PATH."
    local v
    v="$(GOTOOLCHAIN=local go env GOVERSION)"
    [[ "$v" =~ ^go1\.([0-9]+) ]] || die "cannot parse Go version '$v'"
    ((BASH_REMATCH[1] >= 23)) || die "Go $v is too old to build Jaeger $JAEGER_VERSION (need >= 1.23)"
}

# ---------------------------------------------------------------- build ------------
build_query() {
    if [[ -x "$BIN" ]] && "$BIN" version >/dev/null 2>&1; then
        return 0
    fi
    check_go
    mkdir -p "$JCACHE"
    # One build at a time per cache (two test runs may start together).
    exec 8>"$JCACHE/.build.lock"
    flock 8
    if [[ -x "$BIN" ]] && "$BIN" version >/dev/null 2>&1; then
        exec 8>&-
        return 0
    fi
    local t0=$SECONDS json dir src="$JCACHE/src-$JAEGER_VERSION.tmp"
    log "building ${BIN##*/} from the Go module proxy ($(GOTOOLCHAIN=local go env GOVERSION), -p $BUILD_JOBS); the first build takes minutes"
    json="$(gocmd mod download -json "$JAEGER_MODULE@$JAEGER_VERSION")" ||
        die "go mod download $JAEGER_MODULE@$JAEGER_VERSION failed: $json"
    dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
    [[ -n "$dir" && -f "$dir/$MAIN_PKG/main.go" ]] ||
        die "$JAEGER_MODULE@$JAEGER_VERSION has no $MAIN_PKG (JAEGER_READER=$READER); v2 needs a module version >= v1.60, v1 one that still has cmd/query"
    rm -rf "$src"
    cp -r "$dir" "$src"
    chmod -R u+w "$src"
    # (the version package moved from pkg/ to internal/ in v2; -X of a missing one is a no-op)
    local ldflags="-s -w" pkg
    for pkg in internal/version pkg/version; do
        ldflags+=" -X $JAEGER_MODULE/$pkg.latestVersion=$JAEGER_VERSION"
        ldflags+=" -X $JAEGER_MODULE/$pkg.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    done
    if ! (cd "$src" && CGO_ENABLED=0 gocmd build -p "$BUILD_JOBS" -trimpath \
        -ldflags "$ldflags" -o "$BIN.tmp" "$MAIN_PKG"); then
        rm -rf "$src" "$BIN.tmp"
        die "go build of $MAIN_PKG at $JAEGER_VERSION failed (output above)"
    fi
    rm -rf "$src"
    mv "$BIN.tmp" "$BIN"
    exec 8>&-
    log "built $BIN in $((SECONDS - t0))s"
}

build_shim() {
    [[ -x "$SHIM_BIN" ]] && return 0
    check_go
    mkdir -p "$JCACHE"
    exec 8>"$JCACHE/.build.lock"
    flock 8
    if [[ -x "$SHIM_BIN" ]]; then
        exec 8>&-
        return 0
    fi
    local src="$JCACHE/es-root-shim.tmp"
    rm -rf "$src"
    mkdir -p "$src"
    cat >"$src/go.mod" <<'EOF'
module tailsift.local/esrootshim

go 1.23
EOF
    cat >"$src/main.go" <<'EOF'
// es-root-shim: forwards everything to an Elasticsearch node, except that it answers
// HEAD / and GET / (missing in the integ-test distribution) from GET /_nodes/_local.
// Responses are read in full, then sent with a Content-Length: a client never sees a
// half-copied body, and an upstream request never depends on the client connection.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"time"
)

var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length"}

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: es-root-shim LISTEN_ADDR ES_URL")
	}
	target, err := url.Parse(os.Args[2])
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Timeout: 120 * time.Second}
	fail := func(w http.ResponseWriter, r *http.Request, err error) {
		log.Printf("%s %s: %v", r.Method, r.URL, err)
		http.Error(w, err.Error(), http.StatusBadGateway)
	}
	// call sends one request upstream and returns the whole response.
	call := func(ctx context.Context, method, path, rawQuery string, header http.Header, body []byte) (*http.Response, []byte, error) {
		u := *target
		u.Path = target.Path + path
		u.RawPath = ""
		u.RawQuery = rawQuery
		req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
		if err != nil {
			return nil, nil, err
		}
		if header != nil {
			req.Header = header.Clone()
		}
		for _, h := range hopByHop {
			req.Header.Del(h)
		}
		req.ContentLength = int64(len(body))
		res, err := client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer res.Body.Close()
		data, err := io.ReadAll(res.Body)
		return res, data, err
	}
	root := func(w http.ResponseWriter, r *http.Request) {
		res, body, err := call(r.Context(), http.MethodGet, "/_nodes/_local",
			"filter_path=cluster_name,nodes.*.name,nodes.*.version,nodes.*.build_hash", nil, nil)
		if err != nil {
			fail(w, r, err)
			return
		}
		var info struct {
			ClusterName string `json:"cluster_name"`
			Nodes       map[string]struct {
				Name      string `json:"name"`
				Version   string `json:"version"`
				BuildHash string `json:"build_hash"`
			} `json:"nodes"`
		}
		if res.StatusCode != http.StatusOK || json.Unmarshal(body, &info) != nil || len(info.Nodes) == 0 {
			fail(w, r, fmt.Errorf("GET /_nodes/_local: %d %s", res.StatusCode, body))
			return
		}
		var out map[string]any
		for _, n := range info.Nodes {
			out = map[string]any{
				"name": n.Name, "cluster_name": info.ClusterName,
				"version": map[string]any{"number": n.Version, "build_hash": n.BuildHash,
					"build_flavor": "default", "lucene_version": ""},
				"tagline": "You Know, for Search",
			}
		}
		data, _ := json.Marshal(out)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		if r.Method != http.MethodHead {
			_, _ = w.Write(data)
		}
	}
	forward := func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			fail(w, r, err)
			return
		}
		ctx := context.WithoutCancel(r.Context())
		res, data, err := call(ctx, r.Method, r.URL.Path, r.URL.RawQuery, r.Header, body)
		if err != nil {
			fail(w, r, err)
			return
		}
		for k, vs := range res.Header {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		for _, h := range hopByHop {
			w.Header().Del(h)
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(res.StatusCode)
		if r.Method != http.MethodHead {
			_, _ = w.Write(data)
		}
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			root(w, r)
			return
		}
		forward(w, r)
	})
	log.Printf("es-root-shim: %s -> %s", os.Args[1], target)
	log.Fatal(http.ListenAndServe(os.Args[1], handler))
}
EOF
    (cd "$src" && CGO_ENABLED=0 gocmd build -p "$BUILD_JOBS" -trimpath -o "$SHIM_BIN.tmp" .) ||
        die "go build of es-root-shim failed"
    rm -rf "$src"
    mv "$SHIM_BIN.tmp" "$SHIM_BIN"
    exec 8>&-
}

cmd_build() {
    build_query
    log "Jaeger $READER ($JAEGER_VERSION): $BIN"
}

# ---------------------------------------------------------------- processes --------
# Each process is started as the leader of its own session/process group with a marker
# in its environment (TAILSIFT_STACK_MARK); the pid file holds the leader's PID. `stop`
# signals exactly that PID after checking the marker, so a recycled PID is never hit.
MARK="$STACK/$NAME"

alive() { # $1 pid: exists and is not a zombie waiting for its (re)parent to reap it
    kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ "${stat##*) }" != Z* ]]
}

pid_of() { # $1 pidfile -> prints pid if running and ours
    local f="$1" pid
    [[ -f "$f" ]] || return 1
    pid="$(cat "$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF -- "TAILSIFT_STACK_MARK=$MARK" || return 1
    echo "$pid"
}

stop_pid() { # $1 label, $2 pidfile
    local label="$1" f="$2" pid i
    if ! pid="$(pid_of "$f")"; then
        rm -f "$f"
        return 1
    fi
    log "$label: stopping pid $pid (TERM)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "$label: still alive after 10s, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

spawn() { # $1 pidfile, $2 log file, rest: command
    local pidfile="$1" logfile="$2"
    shift 2
    rm -f "$pidfile"
    # shellcheck disable=SC2016 # $$ is the inner shell's PID, which execs the command
    setsid env TAILSIFT_STACK_MARK="$MARK" bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" \
        </dev/null >>"$logfile" 2>&1 &
    local i
    for ((i = 0; i < 100; i++)); do [[ -s "$pidfile" ]] && return 0; sleep 0.05; done
    die "could not start $1"
}

# Desired configuration of this instance; a running instance with a different one is
# restarted by `start` (e.g. a test pointing it at another index prefix).
desired_conf() {
    printf 'JAEGER_READER=%s\nJAEGER_VERSION=%s\nES_URL=%s\nES_INDEX_PREFIX=%s\nES_USE_ALIASES=%s\nJAEGER_QUERY_ES_VERSION=%s\nJAEGER_QUERY_PORT=%s\nJAEGER_QUERY_GRPC_PORT=%s\nJAEGER_QUERY_ADMIN_PORT=%s\nJAEGER_QUERY_ARGS=%s\n' \
        "$READER" "$JAEGER_VERSION" "$ES_URL" "$ES_INDEX_PREFIX" "$USE_ALIASES" "$ES_MAJOR" "$QUERY_PORT" \
        "$GRPC_PORT" "$ADMIN_PORT" "${JAEGER_QUERY_ARGS:-}"
}

load_settings() { # environment wins; otherwise what the running instance was started with
    local saved_port=""
    if [[ -f "$CONF" ]]; then
        saved_port="$(sed -n 's/^JAEGER_QUERY_PORT=//p' "$CONF")"
    fi
    QUERY_PORT="${JAEGER_QUERY_PORT:-${saved_port:-16686}}"
    GRPC_PORT="${JAEGER_QUERY_GRPC_PORT:-16685}"
    ADMIN_PORT="${JAEGER_QUERY_ADMIN_PORT:-16687}"
    ES_URL="${ES_URL:-http://127.0.0.1:9200}"
    ES_URL="${ES_URL%/}"
    ES_INDEX_PREFIX="${ES_INDEX_PREFIX:-}"
    USE_ALIASES="${ES_USE_ALIASES:-false}"
    [[ "$USE_ALIASES" == true || "$USE_ALIASES" == false ]] || die "ES_USE_ALIASES must be true or false"
    ES_MAJOR="${JAEGER_QUERY_ES_VERSION:-0}"
}

api_ready() { # /api/services answers with a JSON data array
    local out
    out="$(curl -fsS --max-time 2 "http://127.0.0.1:$QUERY_PORT/api/services" 2>/dev/null)" || return 1
    [[ "$out" == *'"data":'* ]]
}

stop_all() {
    stop_pid "$NAME" "$PIDFILE" || true
    stop_pid "$NAME es-root-shim" "$SHIM_PIDFILE" || true
    rm -f "$CONF"
}

# What answers at ES_URL: SERVER_KIND (elasticsearch | opensearch), SERVER_MAJOR, and
# ROOT_OK (whether `GET /` works; the Elasticsearch integ-test zip answers 405 there).
probe_server() {
    local root
    SERVER_KIND=elasticsearch
    if root="$(curl -fsS --max-time 5 "$ES_URL/" 2>/dev/null)"; then
        ROOT_OK=true
        grep -q '"distribution" *: *"opensearch"' <<<"$root" && SERVER_KIND=opensearch
        SERVER_MAJOR="$(sed -n 's/.*"number" *: *"\([0-9]*\)\..*/\1/p' <<<"$root" | head -n1)"
    else
        ROOT_OK=false
        SERVER_MAJOR="$(curl -fsS --max-time 5 "$ES_URL/_nodes/_local?filter_path=nodes.*.version" |
            sed -n 's/.*"version" *: *"\([0-9]*\)\..*/\1/p' | head -n1)"
    fi
    [[ -n "$SERVER_MAJOR" ]] || die "cannot read the server version at $ES_URL"
    log "$ES_URL: $SERVER_KIND $SERVER_MAJOR ($([[ $ROOT_OK == true ]] && echo "GET / answers" || echo "no GET /"))"
}

# v2: a query-only collector config. The pipeline is the no-op one every collector
# config needs; the work is done by the extensions. Jaeger must not install its own
# index templates over tailsift's (create_mappings: false). Without `GET /` it cannot
# detect the version or health-check the node, so it is told both.
write_v2_config() { # $1 file
    local version_lines="" major="$ES_MAJOR"
    [[ "$major" == 0 && "$ROOT_OK" == false ]] && major="$SERVER_MAJOR"
    if [[ "$major" != 0 ]]; then
        version_lines="          version: $major"
    fi
    if [[ "$ROOT_OK" == false ]]; then
        version_lines+="${version_lines:+$'\n'}          disable_health_check: true"
    fi
    local metrics_storage="" metric_backends=""
    if [[ -n "${JAEGER_QUERY_PROMETHEUS_URL:-}" ]]; then
        metrics_storage="      metrics: tailsift_metrics"
        metric_backends="    metric_backends:
      tailsift_metrics:
        prometheus:
          endpoint: $JAEGER_QUERY_PROMETHEUS_URL
          normalize_calls: true
          normalize_duration: true"
    fi
    cat >"$1" <<EOF
# generated by deploy/local/jaeger-query.sh -- rewritten on every start
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [nop]
      exporters: [nop]
  telemetry:
    logs:
      level: info
    metrics:
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: $ADMIN_PORT
extensions:
  jaeger_query:
    # (on by default: it traces itself to an OTLP receiver on localhost:4317, which a
    # query-only instance does not have, and then spends its shutdown retrying)
    enable_tracing: false
    storage:
      traces: tailsift_indices
$metrics_storage
    http:
      endpoint: 127.0.0.1:$QUERY_PORT
    grpc:
      endpoint: 127.0.0.1:$GRPC_PORT
  jaeger_storage:
    backends:
      tailsift_indices:
        $SERVER_KIND:
          server_urls: ["$ES_URL"]
$version_lines
          create_mappings: false
          use_aliases: $USE_ALIASES
          indices:
            index_prefix: "$ES_INDEX_PREFIX"
$metric_backends
receivers:
  nop:
exporters:
  nop:
EOF
}

spawn_v2() {
    write_v2_config "$STATE/config.yaml"
    log "starting Jaeger v2 ($JAEGER_VERSION, jaeger_query extension) on http://127.0.0.1:$QUERY_PORT ($SERVER_KIND $ES_URL, index prefix '${ES_INDEX_PREFIX}', aliases $USE_ALIASES)"
    spawn "$PIDFILE" "$STATE/logs/jaeger-query.log" "$BIN" --config "$STATE/config.yaml"
}

spawn_v1() {
    local es_for_query="$ES_URL"
    if [[ "$ROOT_OK" == false ]]; then
        # no root endpoint (integ-test zip): put the pass-through shim in front
        build_shim
        local shim_port
        shim_port="$(free_port)"
        log "es-root-shim: $ES_URL has no 'HEAD /'; serving it on 127.0.0.1:$shim_port"
        spawn "$SHIM_PIDFILE" "$STATE/logs/es-root-shim.log" "$SHIM_BIN" "127.0.0.1:$shim_port" "$ES_URL"
        es_for_query="http://127.0.0.1:$shim_port"
        local i
        for ((i = 0; i < 50; i++)); do
            curl -fsS --max-time 2 -I -o /dev/null "$es_for_query/" 2>/dev/null && break
            pid_of "$SHIM_PIDFILE" >/dev/null || { tail -n 20 "$STATE/logs/es-root-shim.log" >&2; die "es-root-shim exited"; }
            sleep 0.1
        done
    fi
    local args=(
        "--query.http-server.host-port=127.0.0.1:$QUERY_PORT"
        "--query.grpc-server.host-port=127.0.0.1:$GRPC_PORT"
        "--admin.http.host-port=127.0.0.1:$ADMIN_PORT"
        "--es.server-urls=$es_for_query"
        "--es.index-prefix=$ES_INDEX_PREFIX"
        "--es.use-aliases=$USE_ALIASES"
        "--es.version=$ES_MAJOR"
        "--log-level=info"
    )
    # shellcheck disable=SC2206 # word splitting of extra flags is intended
    [[ -n "${JAEGER_QUERY_ARGS:-}" ]] && args+=($JAEGER_QUERY_ARGS)
    log "starting jaeger-query $JAEGER_VERSION on http://127.0.0.1:$QUERY_PORT (ES $ES_URL, index prefix '${ES_INDEX_PREFIX}')"
    spawn "$PIDFILE" "$STATE/logs/jaeger-query.log" \
        env SPAN_STORAGE_TYPE=elasticsearch "$BIN" "${args[@]}"
}

cmd_start() {
    need_cmd curl "Install it with: apt-get install -y curl"
    need_cmd setsid "Install it with: apt-get install -y util-linux"
    need_cmd flock "Install it with: apt-get install -y util-linux"
    load_settings
    mkdir -p "$STACK"
    local want
    want="$(desired_conf)"
    if pid="$(pid_of "$PIDFILE")"; then
        if [[ -f "$CONF" && "$(cat "$CONF")" == "$want" ]] && api_ready; then
            log "already running (pid $pid) on http://127.0.0.1:$QUERY_PORT"
            print_env
            return 0
        fi
        log "running instance (pid $pid) has another configuration; restarting it"
    fi
    stop_all
    build_query
    for p in "$QUERY_PORT" "$GRPC_PORT" "$ADMIN_PORT"; do
        port_busy "$p" && die "port $p is in use by a process this script did not start; stop it or set JAEGER_QUERY_PORT / JAEGER_QUERY_GRPC_PORT / JAEGER_QUERY_ADMIN_PORT"
    done
    curl -fsS --max-time 5 -o /dev/null "$ES_URL/_cluster/health" ||
        die "Elasticsearch does not answer at $ES_URL (start it: bash deploy/local/stack.sh up)"
    mkdir -p "$STATE/logs"
    probe_server
    : >"$STATE/logs/jaeger-query.log"
    if [[ "$READER" == v2 ]]; then
        spawn_v2
    else
        spawn_v1
    fi
    printf '%s\n' "$want" >"$CONF"
    local i
    for ((i = 0; i < 300; i++)); do
        if ! pid_of "$PIDFILE" >/dev/null; then
            tail -n 30 "$STATE/logs/jaeger-query.log" >&2 || true
            stop_all
            die "Jaeger $READER exited during startup (log above, full log $STATE/logs/jaeger-query.log)"
        fi
        if api_ready; then
            log "ready (pid $(cat "$PIDFILE")); log $STATE/logs/jaeger-query.log"
            print_env
            return 0
        fi
        sleep 0.2
    done
    tail -n 30 "$STATE/logs/jaeger-query.log" >&2 || true
    stop_all
    die "Jaeger $READER did not answer /api/services within 60s"
}

free_port() { # a port nothing listens on right now (the shim binds it immediately)
    local p i
    for ((i = 0; i < 100; i++)); do
        p=$((20000 + RANDOM % 20000))
        port_busy "$p" || { echo "$p"; return 0; }
    done
    die "no free port found"
}

cmd_stop() {
    load_settings
    if ! pid_of "$PIDFILE" >/dev/null && ! pid_of "$SHIM_PIDFILE" >/dev/null; then
        rm -f "$PIDFILE" "$SHIM_PIDFILE" "$CONF"
        log "not running"
        return 0
    fi
    stop_all
    log "stopped"
}

cmd_status() {
    load_settings
    local pid
    if pid="$(pid_of "$PIDFILE")"; then
        local shim=""
        if spid="$(pid_of "$SHIM_PIDFILE")"; then shim=", es-root-shim pid $spid"; fi
        echo "$NAME: running (pid $pid$shim) http://127.0.0.1:$QUERY_PORT ($(sed -n 's/^ES_URL=//p' "$CONF" 2>/dev/null), index prefix '$(sed -n 's/^ES_INDEX_PREFIX=//p' "$CONF" 2>/dev/null)')"
        return 0
    fi
    echo "$NAME: stopped"
    return 1
}

print_env() {
    echo "export JAEGER_QUERY_URL=http://127.0.0.1:$QUERY_PORT"
}

case "${1:-}" in
build) cmd_build ;;
bin) build_query >&2; echo "$BIN" ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) load_settings; print_env ;;
*)
    echo "usage: $0 build|bin|start|stop|status|env" >&2
    exit 2
    ;;
esac
