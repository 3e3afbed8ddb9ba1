#!/usr/bin/env bash
# Local REAL service stack for tailsift: an Apache Kafka broker (KRaft, combined
# broker+controller) and an Elasticsearch node, both fetched from Maven Central and
# run as plain processes on 127.0.0.1. No Docker needed.
#
#   deploy/local/stack.sh up       # download (first run), start, wait, create topic
#   deploy/local/stack.sh down     # stop exactly the processes `up` started
#   deploy/local/stack.sh status   # is each service running? (exit 0 only if both are)
#   deploy/local/stack.sh logs     # tail -F both service logs
#   deploy/local/stack.sh env      # `eval "$(deploy/local/stack.sh env)"`
#   deploy/local/stack.sh stop es|kafka    # stop ONE service of a stack that is up (data kept)
#   deploy/local/stack.sh start es|kafka   # start it again on the same ports, wait until ready
#
# Several stacks can run side by side: give each its own TAILSIFT_STACK_DIR and ports,
# e.g. TAILSIFT_STACK_DIR=/tmp/s2 KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093 ES_PORT=19200.
#
# Environment (all optional):
#   TAILSIFT_CACHE         download/unpack cache      (default $HOME/.cache/tailsift)
#   TAILSIFT_MAVEN_REPO    Maven local repository     (default: Maven's own, ~/.m2/repository)
#   TAILSIFT_STACK_DIR     state, data, logs, PIDs    (default <repo>/.stack)
#   KAFKA_VERSION          org.apache.kafka:kafka_2.13 version                 (default 4.3.1)
#   SEARCH_ENGINE          elasticsearch | opensearch                          (default elasticsearch)
#   ES_VERSION             integ-test-zip version of that engine   (default 8.19.21; OpenSearch 2.19.6)
#                          tested: Elasticsearch 8.19.21 and 9.2.0, OpenSearch 2.19.6
#   KAFKA_PORT, KAFKA_CONTROLLER_PORT, ES_PORT         (default 9092, 9093, 9200)
#   KAFKA_SASL_SSL_PORT    adds a SASL_SSL listener (SCRAM-SHA-512 users)      (default: none)
#   KAFKA_MTLS_PORT        adds an SSL listener that requires client certificates (default: none)
#                          (a CA, broker and client certificates are made at every start;
#                          `env` prints how to reach both)
#   KAFKA_TOPIC, KAFKA_TOPIC_PARTITIONS                (default jaeger-spans, 6)
#   TAILSIFT_JAVA_HOME     JDK >= 17 to run Kafka and ES 8 / OpenSearch 2 (default: autodetect)
#   TAILSIFT_JAVA21_HOME   JDK >= 21 for Elasticsearch 9 / OpenSearch 3
#                          (default: autodetect, e.g. /usr/lib/jvm/temurin-25-jdk-amd64)
#   TAILSIFT_ES_USER       system user that runs Elasticsearch when run as root
#                          (default tailsift-es; created once with useradd)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${TAILSIFT_CACHE:-$HOME/.cache/tailsift}"
STACK="${TAILSIFT_STACK_DIR:-$ROOT/.stack}"
KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
LOG4J_VERSION="${LOG4J_VERSION:-2.25.4}"   # log4j2 version kafka-server 4.3.1 depends on
# The engine and version of a stack that was brought up win over the defaults (not
# over the environment), so `start es` of a matrix stack restarts the same node.
if [[ -f "$STACK/ports" ]]; then
    SEARCH_ENGINE="${SEARCH_ENGINE:-$(sed -n 's/^SEARCH_ENGINE=//p' "$STACK/ports")}"
    [[ "${SEARCH_ENGINE:-elasticsearch}" == "$(sed -n 's/^SEARCH_ENGINE=//p' "$STACK/ports")" ]] &&
        ES_VERSION="${ES_VERSION:-$(sed -n 's/^ES_VERSION=//p' "$STACK/ports")}"
fi
SEARCH_ENGINE="${SEARCH_ENGINE:-elasticsearch}"
case "$SEARCH_ENGINE" in
elasticsearch)
    ES_VERSION="${ES_VERSION:-8.19.21}"
    ES_GROUP=org.elasticsearch.distribution.integ-test-zip
    ES_JAVA_MIN=$(( ${ES_VERSION%%.*} >= 9 ? 21 : 17 ))
    ENV_PREFIX=ES ;;
opensearch)
    ES_VERSION="${ES_VERSION:-2.19.6}"
    ES_GROUP=org.opensearch.distribution.integ-test-zip
    ES_JAVA_MIN=$(( ${ES_VERSION%%.*} >= 3 ? 21 : 17 ))
    ENV_PREFIX=OPENSEARCH ;;
*)
    echo "SEARCH_ENGINE must be elasticsearch or opensearch, not '$SEARCH_ENGINE'" >&2
    exit 2 ;;
esac
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
ES_USER="${TAILSIFT_ES_USER:-tailsift-es}"
TOPIC="${KAFKA_TOPIC:-jaeger-spans}"
TOPIC_PARTITIONS="${KAFKA_TOPIC_PARTITIONS:-6}"

KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
ES_HOME="$CACHE/$SEARCH_ENGINE-$ES_VERSION"

log() { printf '[stack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# Ports: `up` records the ports it used so that `env`/`status` of a later shell report
# the same endpoints even without the variables set.
load_ports() {
    local saved_kafka="" saved_ctrl="" saved_es="" saved_sasl="" saved_mtls=""
    if [[ -f "$STACK/ports" ]]; then
        # shellcheck disable=SC1091
        saved_kafka="$(sed -n 's/^KAFKA_PORT=//p' "$STACK/ports")"
        saved_ctrl="$(sed -n 's/^KAFKA_CONTROLLER_PORT=//p' "$STACK/ports")"
        saved_es="$(sed -n 's/^ES_PORT=//p' "$STACK/ports")"
        saved_sasl="$(sed -n 's/^KAFKA_SASL_SSL_PORT=//p' "$STACK/ports")"
        saved_mtls="$(sed -n 's/^KAFKA_MTLS_PORT=//p' "$STACK/ports")"
    fi
    KAFKA_PORT="${KAFKA_PORT:-${saved_kafka:-9092}}"
    KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-${saved_ctrl:-9093}}"
    ES_PORT="${ES_PORT:-${saved_es:-9200}}"
    KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-$saved_sasl}"
    KAFKA_MTLS_PORT="${KAFKA_MTLS_PORT:-$saved_mtls}"
}

# The SCRAM user of the SASL_SSL listener (made at every start; the password is only
# for this throw-away local broker).
SCRAM_USER=tailsift
SCRAM_PASSWORD=tailsift-local-secret
TLS_DIR="$STACK/kafka/tls"

print_env() {
    echo "export KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
    echo "export ES_URL=http://127.0.0.1:$ES_PORT"
    if [[ -n "$KAFKA_SASL_SSL_PORT$KAFKA_MTLS_PORT" ]]; then
        echo "export KAFKA_CA_FILE=$TLS_DIR/ca.pem"
    fi
    if [[ -n "$KAFKA_SASL_SSL_PORT" ]]; then
        echo "export KAFKA_SASL_SSL_BROKERS=127.0.0.1:$KAFKA_SASL_SSL_PORT"
        echo "export KAFKA_SCRAM_USER=$SCRAM_USER KAFKA_SCRAM_PASSWORD=$SCRAM_PASSWORD"
    fi
    if [[ -n "$KAFKA_MTLS_PORT" ]]; then
        echo "export KAFKA_MTLS_BROKERS=127.0.0.1:$KAFKA_MTLS_PORT"
        echo "export KAFKA_CLIENT_CERT=$TLS_DIR/client.pem KAFKA_CLIENT_KEY=$TLS_DIR/client.key"
    fi
}

# ---------------------------------------------------------------- prerequisites ----
java_major() { # $1 = java binary -> prints the feature version (17, 21, ...)
    "$1" -XshowSettings:properties -version 2>&1 |
        sed -n 's/^ *java\.specification\.version = //p' | sed 's/^1\.//' | head -n1
}

find_jdk() { # $1 minimum feature version, $2.. preferred homes -> prints a JDK home
    local min="$1" c v
    shift
    local candidates=("$@" /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64)
    [[ -n "${JAVA_HOME:-}" ]] && candidates+=("$JAVA_HOME")
    if command -v java >/dev/null 2>&1; then
        candidates+=("$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")")
    fi
    candidates+=(/usr/lib/jvm/*)
    for c in "${candidates[@]}"; do
        [[ -n "$c" && -x "$c/bin/java" ]] || continue
        v="$(java_major "$c/bin/java")"
        if [[ -n "$v" && "$v" -ge "$min" ]]; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

find_java() {
    JAVA_HOME_STACK="$(find_jdk 17 "${TAILSIFT_JAVA_HOME:-}")" ||
        die "no Java >= 17 found (Kafka 4 and Elasticsearch 8 need it). Install it with:
    apt-get install -y openjdk-17-jdk-headless
or point TAILSIFT_JAVA_HOME at a JDK >= 17."
    JAVA="$JAVA_HOME_STACK/bin/java"
    # Elasticsearch 9 and OpenSearch 3 need Java 21 or newer; Kafka stays on the first JDK.
    if [[ "$ES_JAVA_MIN" -gt 17 ]]; then
        ES_JAVA_HOME_STACK="$(find_jdk "$ES_JAVA_MIN" "${TAILSIFT_JAVA21_HOME:-}" \
            /usr/lib/jvm/temurin-25-jdk-amd64)" ||
            die "$SEARCH_ENGINE $ES_VERSION needs Java >= $ES_JAVA_MIN; point TAILSIFT_JAVA21_HOME at one"
    else
        ES_JAVA_HOME_STACK="$JAVA_HOME_STACK"
    fi
}

need_cmd() { # $1 command, $2 Debian package
    command -v "$1" >/dev/null 2>&1 || die "'$1' is missing. Install it with:
    apt-get install -y $2"
}

check_prereqs() {
    find_java
    need_cmd curl curl
    need_cmd setsid util-linux
    need_cmd flock util-linux
}

mvn_cmd() {
    need_cmd mvn maven
    local args=(-B -q -Dstyle.color=never)
    [[ -n "${TAILSIFT_MAVEN_REPO:-}" ]] && args+=("-Dmaven.repo.local=$TAILSIFT_MAVEN_REPO")
    # (Debian's Maven prints stray ESC[0m resets even in batch mode: strip them)
    JAVA_HOME="$JAVA_HOME_STACK" mvn "${args[@]}" "$@" 2>&1 | sed -u 's/\x1b\[0m//g' >&2
}

# ---------------------------------------------------------------- downloads --------
fetch_kafka() {
    [[ -f "$KAFKA_HOME/.complete" ]] && return 0
    log "resolving Apache Kafka $KAFKA_VERSION (kafka_2.13 + kafka-tools + log4j2) from Maven Central into $KAFKA_HOME"
    rm -rf "$KAFKA_HOME.tmp"
    mkdir -p "$KAFKA_HOME.tmp"
    cat >"$KAFKA_HOME.tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tailsift.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- the broker: kafka.Kafka, kafka.tools.StorageTool -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- org.apache.kafka.tools.TopicCommand; Kafka Connect is not needed for it -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version>
      <exclusions>
        <exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion>
        <exclusion><groupId>com.fasterxml.jackson.jakarta.rs</groupId><artifactId>jackson-jakarta-rs-json-provider</artifactId></exclusion>
      </exclusions>
    </dependency>
    <!-- logging: Kafka uses slf4j 1.7 -> log4j2 -> file -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
    (cd "$KAFKA_HOME.tmp" && mvn_cmd "$DEP_PLUGIN:copy-dependencies" \
        -DoutputDirectory=libs -DincludeScope=runtime) ||
        die "Maven could not resolve Kafka $KAFKA_VERSION (see output above)"
    ls "$KAFKA_HOME.tmp"/libs/kafka_2.13-*.jar >/dev/null 2>&1 || die "kafka_2.13 jar missing after Maven resolution"
    touch "$KAFKA_HOME.tmp/.complete"
    rm -rf "$KAFKA_HOME"
    mv "$KAFKA_HOME.tmp" "$KAFKA_HOME"
}

fetch_es() {
    [[ -f "$ES_HOME/.complete" ]] && return 0
    need_cmd unzip unzip
    log "fetching $SEARCH_ENGINE $ES_VERSION (integ-test-zip) from Maven Central into $ES_HOME"
    local dl="$CACHE/downloads"
    mkdir -p "$dl"
    mvn_cmd "$DEP_PLUGIN:copy" \
        "-Dartifact=$ES_GROUP:$SEARCH_ENGINE:$ES_VERSION:zip" \
        "-DoutputDirectory=$dl" ||
        die "Maven could not fetch $SEARCH_ENGINE $ES_VERSION (see output above)"
    rm -rf "$ES_HOME.tmp"
    mkdir -p "$ES_HOME.tmp"
    unzip -q "$dl/$SEARCH_ENGINE-$ES_VERSION.zip" -d "$ES_HOME.tmp"
    local inner
    inner="$(find "$ES_HOME.tmp" -mindepth 1 -maxdepth 1 -type d | head -n1)"
    [[ -x "$inner/bin/$SEARCH_ENGINE" ]] || die "unexpected layout in $SEARCH_ENGINE-$ES_VERSION.zip"
    chmod -R a+rX "$inner"
    touch "$inner/.complete"
    rm -rf "$ES_HOME"
    mv "$inner" "$ES_HOME"
    rm -rf "$ES_HOME.tmp" "$dl/$SEARCH_ENGINE-$ES_VERSION.zip"
}

# ---------------------------------------------------------------- processes --------
# Each service runs as the leader of its own session/process group; its pid file holds
# that leader's PID (== the group id). `down` signals exactly that group, after checking
# that the leader is still the process we started (its command line carries our marker).
pid_of() { # $1 service -> prints pid if running and ours
    local f="$STACK/$1.pid" pid
    [[ -f "$f" ]] || return 1
    pid="$(cat "$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-Dtailsift.stack=$STACK" || return 1
    echo "$pid"
}

group_alive() { # $1 pgid -> any process left in that group?
    [[ -n "$(ps -e -o pgid= | awk -v g="$1" '$1 == g' | head -n1)" ]]
}

stop_service() { # $1 service name
    local name="$1" pid
    if ! pid="$(pid_of "$name")"; then
        # leader gone? children in its group may still be alive (e.g. ES server JVM)
        if [[ -f "$STACK/$name.pid" ]]; then
            pid="$(cat "$STACK/$name.pid")"
            if [[ "$pid" =~ ^[0-9]+$ ]] && group_alive "$pid" &&
                ps -e -o pgid=,args= | awk -v g="$pid" '$1 == g' | grep -qF -- "-Dtailsift.stack=$STACK"; then
                log "$name: leader $pid gone, stopping its remaining process group"
                kill -KILL -- "-$pid" 2>/dev/null || true
            fi
            rm -f "$STACK/$name.pid"
        fi
        log "$name: not running"
        return 0
    fi
    log "$name: stopping process group $pid (TERM)"
    kill -TERM -- "-$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 60; i++)); do
        group_alive "$pid" || break
        sleep 0.5
    done
    if group_alive "$pid"; then
        log "$name: still alive after 30s, sending KILL"
        kill -KILL -- "-$pid" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$STACK/$name.pid"
    log "$name: stopped"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- kafka ------------
kafka_cp() { echo "$KAFKA_HOME/libs/*"; }

kafka_tool() { # runs a Kafka CLI main class with a quiet console-only log4j2 config
    "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$STACK/kafka/tools-log4j2.properties" \
        -cp "$(kafka_cp)" "$@"
}

write_kafka_config() {
    mkdir -p "$STACK/kafka/data" "$STACK/kafka/logs"
    cat >"$STACK/kafka/server.properties" <<EOF
# generated by deploy/local/stack.sh -- do not edit, rewritten on every 'up'
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT$(secure_listeners)
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT$(secure_listeners)
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL
log.dirs=$STACK/kafka/data
num.partitions=6
auto.create.topics.enable=true
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
EOF
    if [[ -n "$KAFKA_SASL_SSL_PORT$KAFKA_MTLS_PORT" ]]; then
        write_kafka_tls_config
    fi
    cat >"$STACK/kafka/log4j2.properties" <<EOF
# generated by deploy/local/stack.sh
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $STACK/kafka/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.controller.name = org.apache.kafka.controller
logger.controller.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
    cat >"$STACK/kafka/tools-log4j2.properties" <<'EOF'
status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
}

# ---------------------------------------------------------------- kafka security ---
secure_listeners() { # the optional listeners, as a ",NAME://host:port" suffix
    [[ -n "$KAFKA_SASL_SSL_PORT" ]] && printf ',SASL_SSL://127.0.0.1:%s' "$KAFKA_SASL_SSL_PORT"
    [[ -n "$KAFKA_MTLS_PORT" ]] && printf ',MTLS://127.0.0.1:%s' "$KAFKA_MTLS_PORT"
    return 0
}

# A fresh CA, and broker and client certificates signed by it (SAN 127.0.0.1 and
# localhost, so clients verify the broker's name), as PEM files: Kafka reads PEM key
# stores directly, librdkafka takes the same files.
make_certificates() {
    need_cmd openssl openssl
    rm -rf "$TLS_DIR"
    mkdir -p "$TLS_DIR"
    (
        cd "$TLS_DIR"
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=tailsift local CA" \
            -keyout ca.key -out ca.pem 2>/dev/null
        for who in broker client; do
            openssl req -newkey rsa:2048 -nodes -subj "/CN=tailsift-$who" \
                -keyout "$who.key" -out "$who.csr" 2>/dev/null
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$who.ext"
            openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
                -days 30 -extfile "$who.ext" -out "$who.pem" 2>/dev/null
        done
        cat broker.key broker.pem >broker-keystore.pem
        rm -f ./*.csr ./*.ext ca.srl
    ) || die "openssl could not make the listener certificates"
}

write_kafka_tls_config() {
    make_certificates
    cat >>"$STACK/kafka/server.properties" <<EOF
# secured listeners: SASL_SSL (SCRAM-SHA-512) and MTLS (SSL, client certificate required)
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
listener.name.mtls.ssl.client.auth=required
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
}

# The SCRAM user, through the plaintext listener (idempotent: the password is set).
add_scram_user() {
    kafka_tool kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
        --alter --entity-type users --entity-name "$SCRAM_USER" \
        --add-config "SCRAM-SHA-512=[iterations=4096,password=$SCRAM_PASSWORD]" >/dev/null ||
        die "could not create the SCRAM user $SCRAM_USER"
    log "kafka: SASL_SSL on 127.0.0.1:$KAFKA_SASL_SSL_PORT (SCRAM-SHA-512 user $SCRAM_USER)"
}

start_kafka() {
    if pid="$(pid_of kafka)"; then
        log "kafka: already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
        return 0
    fi
    port_busy "$KAFKA_PORT" && die "port $KAFKA_PORT is in use by a process this stack did not start; stop it or set KAFKA_PORT"
    port_busy "$KAFKA_CONTROLLER_PORT" && die "port $KAFKA_CONTROLLER_PORT is in use by a process this stack did not start; stop it or set KAFKA_CONTROLLER_PORT"
    write_kafka_config
    if [[ ! -f "$STACK/kafka/data/meta.properties" ]]; then
        local cluster_id
        cluster_id="$(kafka_tool kafka.tools.StorageTool random-uuid | tail -n1)"
        log "kafka: formatting KRaft storage (cluster id $cluster_id)"
        kafka_tool kafka.tools.StorageTool format -t "$cluster_id" \
            -c "$STACK/kafka/server.properties" --ignore-formatted >/dev/null
    fi
    log "kafka: starting $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT)"
    # shellcheck disable=SC2016 # $$ is the inner shell's PID, which execs java
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$STACK/kafka.pid" \
        "$JAVA" -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true -Dtailsift.stack="$STACK" \
        -Dkafka.logs.dir="$STACK/kafka/logs" \
        -Dlog4j2.configurationFile="$STACK/kafka/log4j2.properties" \
        -cp "$(kafka_cp)" kafka.Kafka "$STACK/kafka/server.properties" \
        </dev/null >"$STACK/kafka/logs/stdout.log" 2>&1 &
    local i
    for ((i = 0; i < 100; i++)); do [[ -s "$STACK/kafka.pid" ]] && break; sleep 0.1; done
}

wait_kafka() {
    local i
    for ((i = 0; i < 360; i++)); do
        pid_of kafka >/dev/null || {
            tail -n 40 "$STACK/kafka/logs/stdout.log" "$STACK/kafka/logs/server.log" >&2 2>/dev/null || true
            die "kafka exited during startup (logs above, full logs in $STACK/kafka/logs)"
        }
        port_busy "$KAFKA_PORT" && break
        sleep 0.5
    done
    port_busy "$KAFKA_PORT" || die "kafka did not open 127.0.0.1:$KAFKA_PORT within 180s (see $STACK/kafka/logs)"
    # A metadata round trip through the real admin API; it also makes the topic.
    local out
    for ((i = 0; i < 10; i++)); do
        if out="$(kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
            --create --if-not-exists --topic "$TOPIC" --partitions "$TOPIC_PARTITIONS" \
            --replication-factor 1 2>&1)"; then
            break
        fi
        sleep 2
    done
    [[ $i -lt 10 ]] || { echo "$out" >&2; die "kafka does not answer admin requests on 127.0.0.1:$KAFKA_PORT"; }
    local desc
    desc="$(kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
        --describe --topic "$TOPIC" 2>&1 | head -n1)"
    log "kafka: ready; $desc"
    [[ -z "$KAFKA_SASL_SSL_PORT" ]] || add_scram_user
    [[ -z "$KAFKA_MTLS_PORT" ]] || log "kafka: mTLS on 127.0.0.1:$KAFKA_MTLS_PORT (client certificates from $TLS_DIR/ca.pem)"
}

# ---------------------------------------------------------------- elasticsearch ----
# Elasticsearch refuses to run as root. As root we run it as a dedicated system user,
# which must be able to reach the ES home and its state dir. Both normally live under
# $TAILSIFT_CACHE and $STACK; when one of them is not reachable for that user (e.g. the
# default cache under root's 0700 home), it is placed under the user's own /var/lib dir
# instead: a copy of the ES home, and the state dir with a symlink $STACK/es -> there.
# (Capabilities don't help: ES checks files with access(2), which ignores them.)
ES_RUN_HOME=""
ES_STATE=""
ES_RUNNER=()
ES_VARLIB="/var/lib/$ES_USER"

as_es_user() { "${ES_RUNNER[@]}" "$@"; }

prepare_es_runtime() {
    ES_RUN_HOME="$ES_HOME"
    ES_STATE="$STACK/es"
    ES_RUNNER=()
    if [[ $EUID -ne 0 ]]; then
        mkdir -p "$ES_STATE"
        return 0
    fi
    if ! id -u "$ES_USER" >/dev/null 2>&1; then
        need_cmd useradd passwd
        log "creating system user $ES_USER (Elasticsearch refuses to run as root)"
        useradd --system --no-create-home --home-dir "$ES_VARLIB" --shell /usr/sbin/nologin "$ES_USER"
    fi
    ES_RUNNER=(setpriv --reuid="$(id -u "$ES_USER")" --regid="$(id -g "$ES_USER")" --clear-groups)
    if ! as_es_user test -r "$ES_HOME/bin/$SEARCH_ENGINE" -a -x "$ES_HOME/lib" 2>/dev/null; then
        ES_RUN_HOME="$ES_VARLIB/$SEARCH_ENGINE-$ES_VERSION"
        mkdir -p "$ES_VARLIB"
        chmod 755 "$ES_VARLIB"
        (
            flock -w 600 9 || die "timed out waiting for the lock $ES_VARLIB/.lock"
            if [[ ! -f "$ES_RUN_HOME/.complete" ]]; then
                log "$SEARCH_ENGINE: $ES_HOME is not readable by $ES_USER; copying it to $ES_RUN_HOME"
                rm -rf "$ES_RUN_HOME" "$ES_RUN_HOME.tmp"
                cp -a "$ES_HOME" "$ES_RUN_HOME.tmp"
                chown -R root:root "$ES_RUN_HOME.tmp"
                chmod -R a+rX "$ES_RUN_HOME.tmp"
                mv "$ES_RUN_HOME.tmp" "$ES_RUN_HOME"
            fi
        ) 9>"$ES_VARLIB/.lock"
    fi
    mkdir -p "$STACK"
    if [[ -L "$STACK/es" ]] || ! as_es_user test -x "$STACK" 2>/dev/null; then
        local key
        key="$(printf '%s' "$STACK" | md5sum | cut -c1-12)"
        ES_STATE="$ES_VARLIB/state-$key"
        mkdir -p "$ES_VARLIB" "$ES_STATE"
        chmod 755 "$ES_VARLIB"
        if [[ ! -L "$STACK/es" ]]; then
            rm -rf "$STACK/es"
            ln -s "$ES_STATE" "$STACK/es"
            log "$SEARCH_ENGINE: $STACK is not reachable by $ES_USER; state in $ES_STATE (symlinked as $STACK/es)"
        fi
    fi
    mkdir -p "$ES_STATE"
}

# A data dir belongs to one engine and version line: OpenSearch cannot read
# Elasticsearch's, and Elasticsearch cannot go back a major. Refuse instead of corrupting.
check_es_data() {
    local marker="$ES_STATE/engine" want="$SEARCH_ENGINE ${ES_VERSION%%.*}"
    if [[ -d "$ES_STATE/data" && -n "$(ls -A "$ES_STATE/data" 2>/dev/null)" ]]; then
        if [[ -f "$marker" && "$(cat "$marker")" != "$want" ]]; then
            die "$ES_STATE/data holds $(cat "$marker") data, not $want: use another TAILSIFT_STACK_DIR (or delete it)"
        fi
    fi
    mkdir -p "$ES_STATE"
    echo "$want" >"$ES_STATE/engine"
}

write_es_config() {
    mkdir -p "$ES_STATE/data" "$ES_STATE/logs" "$ES_STATE/tmp"
    rm -rf "$ES_STATE/config"
    cp -r "$ES_RUN_HOME/config" "$ES_STATE/config"
    # (jvm.options' relative gc.log/hs_err paths: Elasticsearch's launcher starts the
    # server JVM in path.logs, so they resolve there. OpenSearch's starts it in the
    # caller's directory, which its user may not write: make them absolute.)
    if [[ "$SEARCH_ENGINE" == opensearch ]]; then
        sed -i -e "s#=logs/#=$ES_STATE/logs/#g" \
            -e "s#HeapDumpPath=data#HeapDumpPath=$ES_STATE/data#" "$ES_STATE/config/jvm.options"
    fi
    {
        echo "# generated by deploy/local/stack.sh -- rewritten on every 'up'"
        echo "cluster.name: tailsift-local"
        echo "node.name: tailsift-local-1"
        echo "discovery.type: single-node"
        echo "network.host: 127.0.0.1"
        echo "http.port: $ES_PORT"
        echo "path.data: $ES_STATE/data"
        echo "path.logs: $ES_STATE/logs"
        echo "cluster.routing.allocation.disk.threshold_enabled: false"
        echo "action.destructive_requires_name: false"
        # the integ-test zip has x-pack-core/-security modules; only set it where they exist
        if [[ -d "$ES_RUN_HOME/modules/x-pack-security" ]]; then
            echo "xpack.security.enabled: false"
        fi
    } >"$ES_STATE/config/$SEARCH_ENGINE.yml"
    if [[ $EUID -eq 0 ]]; then
        chown -R "$ES_USER:" "$ES_STATE"
    fi
}

start_es() {
    if pid="$(pid_of es)"; then
        log "$SEARCH_ENGINE: already running (pid $pid) on 127.0.0.1:$ES_PORT"
        return 0
    fi
    port_busy "$ES_PORT" && die "port $ES_PORT is in use by a process this stack did not start; stop it or set ES_PORT"
    prepare_es_runtime
    check_es_data
    write_es_config
    log "$SEARCH_ENGINE: starting $ES_VERSION on 127.0.0.1:$ES_PORT${ES_RUNNER[0]:+ as $ES_USER} (Java $(java_major "$ES_JAVA_HOME_STACK/bin/java"))"
    # The launcher (a small JVM) starts the server JVM as its child, in the same group.
    rm -f "$STACK/es.pid.tmp"
    # shellcheck disable=SC2016 # $$ is the inner shell's PID, which execs the launcher
    # (Elasticsearch reads ES_*, OpenSearch the same names with OPENSEARCH_*.)
    setsid env "${ENV_PREFIX}_JAVA_HOME=$ES_JAVA_HOME_STACK" "${ENV_PREFIX}_PATH_CONF=$ES_STATE/config" \
        "${ENV_PREFIX}_TMPDIR=$ES_STATE/tmp" \
        "${ENV_PREFIX}_JAVA_OPTS=-Xms512m -Xmx512m -Dtailsift.stack=$STACK" \
        CLI_JAVA_OPTS="-Dtailsift.stack=$STACK" \
        bash -c 'echo $$ >"$0"; exec "$@"' "$STACK/es.pid.tmp" \
        "${ES_RUNNER[@]}" "$ES_RUN_HOME/bin/$SEARCH_ENGINE" \
        </dev/null >"$ES_STATE/logs/stdout.log" 2>&1 &
    local i
    for ((i = 0; i < 100; i++)); do [[ -s "$STACK/es.pid.tmp" ]] && break; sleep 0.1; done
    mv "$STACK/es.pid.tmp" "$STACK/es.pid"
}

wait_es() {
    local i health=""
    for ((i = 0; i < 600; i++)); do
        pid_of es >/dev/null || {
            tail -n 40 "$STACK/es/logs/stdout.log" >&2 2>/dev/null || true
            die "$SEARCH_ENGINE exited during startup (logs above, full logs in $STACK/es/logs)"
        }
        health="$(curl -fsS "http://127.0.0.1:$ES_PORT/_cluster/health?wait_for_status=yellow&timeout=1s" 2>/dev/null || true)"
        if [[ "$health" == *'"status":"green"'* || "$health" == *'"status":"yellow"'* ]]; then
            local version
            # (GET / is 405 here: the integ-test zip lacks the rest-root module)
            version="$(curl -fsS "http://127.0.0.1:$ES_PORT/_nodes/_local?filter_path=nodes.*.version" |
                sed -n 's/.*"version" *: *"\([^"]*\)".*/\1/p')"
            log "$SEARCH_ENGINE: ready; version $version, health $(sed 's/.*"status":"\([a-z]*\)".*/\1/' <<<"$health")"
            return 0
        fi
        sleep 0.5
    done
    die "$SEARCH_ENGINE not healthy within 300s (see $STACK/es/logs)"
}

# ---------------------------------------------------------------- commands ---------
cmd_up() {
    check_prereqs
    mkdir -p "$CACHE" "$STACK"
    # Ports of a running stack win over the environment (can't move a live process).
    if pid_of kafka >/dev/null || pid_of es >/dev/null; then
        unset KAFKA_PORT KAFKA_CONTROLLER_PORT ES_PORT KAFKA_SASL_SSL_PORT KAFKA_MTLS_PORT
    fi
    load_ports
    local t0=$SECONDS
    # Several stacks (worktrees, CI) may share one cache: fetch under a lock.
    (
        flock -w 1200 9 || die "timed out waiting for the cache lock $CACHE/.lock"
        fetch_kafka
        fetch_es
    ) 9>"$CACHE/.lock"
    printf 'KAFKA_PORT=%s\nKAFKA_CONTROLLER_PORT=%s\nES_PORT=%s\nSEARCH_ENGINE=%s\nES_VERSION=%s\nKAFKA_SASL_SSL_PORT=%s\nKAFKA_MTLS_PORT=%s\n' \
        "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$ES_PORT" "$SEARCH_ENGINE" "$ES_VERSION" \
        "$KAFKA_SASL_SSL_PORT" "$KAFKA_MTLS_PORT" >"$STACK/ports"
    start_kafka
    start_es
    wait_kafka
    wait_es
    log "stack up in $((SECONDS - t0))s (Kafka $KAFKA_VERSION, $SEARCH_ENGINE $ES_VERSION); state in $STACK"
    print_env
}

cmd_down() {
    stop_service kafka
    stop_service es
}

cmd_status() {
    load_ports
    local rc=0 pid
    if pid="$(pid_of kafka)"; then
        echo "kafka: running (pid $pid) 127.0.0.1:$KAFKA_PORT"
    else
        echo "kafka: stopped"; rc=1
    fi
    if pid="$(pid_of es)"; then
        echo "$SEARCH_ENGINE $ES_VERSION: running (pid $pid) http://127.0.0.1:$ES_PORT"
    else
        echo "$SEARCH_ENGINE: stopped"; rc=1
    fi
    return $rc
}

# One service of a stack that was brought `up` before (fault-injection tests): same
# state dir, same ports (taken from $STACK/ports, not the environment), data kept.
cmd_service() { # $1 start|stop, $2 es|kafka
    local action="$1" svc="${2:-}"
    case "$svc" in
    es | elasticsearch) svc=es ;;
    kafka) ;;
    *) die "usage: $0 $action es|kafka" ;;
    esac
    [[ -f "$STACK/ports" ]] || die "no stack under $STACK (run: $0 up)"
    unset KAFKA_PORT KAFKA_CONTROLLER_PORT ES_PORT KAFKA_SASL_SSL_PORT KAFKA_MTLS_PORT
    load_ports
    if [[ "$action" == stop ]]; then
        stop_service "$svc"
        return 0
    fi
    check_prereqs
    if [[ "$svc" == kafka ]]; then
        [[ -f "$KAFKA_HOME/.complete" ]] || die "Kafka $KAFKA_VERSION is not downloaded (run: $0 up)"
        start_kafka
        wait_kafka
    else
        [[ -f "$ES_HOME/.complete" ]] || die "$SEARCH_ENGINE $ES_VERSION is not downloaded (run: $0 up)"
        start_es
        # (the leader execs the launcher JVM that carries our marker a moment later)
        local i
        for ((i = 0; i < 100; i++)); do pid_of es >/dev/null && break; sleep 0.1; done
        wait_es
    fi
}

cmd_logs() {
    local files=()
    [[ -f "$STACK/kafka/logs/server.log" ]] && files+=("$STACK/kafka/logs/server.log")
    [[ -f "$STACK/es/logs/tailsift-local.log" ]] && files+=("$STACK/es/logs/tailsift-local.log")
    [[ ${#files[@]} -gt 0 ]] || die "no logs yet under $STACK (run: $0 up)"
    exec tail -n 50 -F "${files[@]}"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
logs) cmd_logs ;;
env) load_ports; print_env ;;
start | stop) cmd_service "$1" "${2:-}" ;;
*)
    echo "usage: $0 up|down|status|logs|env|start es|kafka|stop es|kafka" >&2
    exit 2
    ;;
esac
