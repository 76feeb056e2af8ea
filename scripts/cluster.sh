#!/usr/bin/env bash
# A local confab cluster on this machine, from a geo-config (default
# geo-config/examples/local.toml: two regions, a core and an edge in each), plus one
# push notification worker:
#
#   scripts/cluster.sh up       # build, start Redis/Cassandra/Kafka, every core, every edge
#   scripts/cluster.sh status
#   scripts/cluster.sh down     # stop exactly what `up` started (by pid)
#
# `up` writes target/cluster/endpoints.json:
#   {"edges":[{"region":"…","pop":"…","https":"https://127.0.0.1:PORT"}],"ca":"…/ca.pem"}
# Every edge serves the whole public API v1; clients trust the cluster CA named there.
# Logs: target/cluster/logs/NAME.log. Environment: CONFAB_GEO (geo-config file),
# CONFAB_PROFILE=release (default debug), CONFAB_CLUSTER_DIR (default target/cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

ROOT=$PWD
GEO=${CONFAB_GEO:-$ROOT/geo-config/examples/local.toml}
DIR=${CONFAB_CLUSTER_DIR:-$ROOT/target/cluster}
PROFILE=${CONFAB_PROFILE:-debug}
BIN=$ROOT/target/$PROFILE/confab
SERVICES=$ROOT/scripts/services/services.sh
START_TIMEOUT=${CONFAB_CLUSTER_TIMEOUT:-90}

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Waits until something accepts TCP connections on HOST:PORT.
wait_tcp() {
    local addr=$1 name=$2 deadline=$((SECONDS + START_TIMEOUT))
    until (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; do
        pid_alive "$DIR/pids/$name.pid" || die "$name exited; see $DIR/logs/$name.log"
        [ $SECONDS -lt $deadline ] || die "$name not listening on $addr after ${START_TIMEOUT}s"
        sleep 0.2
    done
}

wait_healthy() {
    local url=$1 name=$2 deadline=$((SECONDS + START_TIMEOUT))
    until curl -sf --cacert "$DIR/ca/ca.pem" "$url/healthz" >/dev/null 2>&1; do
        pid_alive "$DIR/pids/$name.pid" || die "$name exited; see $DIR/logs/$name.log"
        [ $SECONDS -lt $deadline ] || die "$name not healthy at $url after ${START_TIMEOUT}s"
        sleep 0.2
    done
}

start_node() {
    local name=$1
    shift
    if pid_alive "$DIR/pids/$name.pid"; then
        log "$name already running (pid $(cat "$DIR/pids/$name.pid"))"
        return
    fi
    "$BIN" "$@" >"$DIR/logs/$name.log" 2>&1 &
    echo $! >"$DIR/pids/$name.pid"
    log "$name started (pid $!)"
}

up() {
    ensure_build_tools
    command -v curl >/dev/null || apt_install curl
    mkdir -p "$DIR/pids" "$DIR/logs" "$DIR/nodes"
    log "building confab ($PROFILE)"
    if [ "$PROFILE" = release ]; then
        cargo build --locked --release --bin confab
    else
        cargo build --locked --bin confab
    fi
    "$BIN" geo check "$GEO" >/dev/null

    # Services this call starts are stopped again by `down`; ones already running stay.
    local before service
    before=$("$SERVICES" status 2>/dev/null || true)
    for service in redis cassandra kafka; do
        grep -q "^$service *running" <<<"$before" || touch "$DIR/services-started"
    done
    "$SERVICES" up all
    set -a
    # shellcheck disable=SC1091
    source "$ROOT/.services/endpoints.env"
    set +a

    cat >"$DIR/backends.toml" <<TOML
# Written by scripts/cluster.sh: every core of the local cluster shares these engines.
[store]
backend = "cassandra"
nodes = ["$CONFAB_CASSANDRA_NODES"]
keyspace = "confab_cluster"

[presence]
backend = "redis"
url = "$CONFAB_REDIS_URL"

[fanout]
backend = "redis"
url = "$CONFAB_REDIS_URL"

[event_log]
backend = "kafka"
brokers = "$CONFAB_KAFKA_BROKERS"
namespace = "confab-cluster."
TOML

    local kind name region addr edges=()
    # Cores one at a time: the first makes the cluster CA and the signing key.
    while read -r kind name region addr; do
        [ "$kind" = core ] || continue
        start_node "$name" core --geo "$GEO" --node "$name" --config "$DIR/backends.toml" \
            --data-dir "$DIR/nodes/$name" --ca-dir "$DIR/ca" --keys-dir "$DIR/keys"
        wait_tcp "$addr" "$name"
    done < <("$BIN" geo nodes "$GEO")
    # One push worker for the whole cluster (more would share the Kafka partitions).
    start_node notify notify --config "$DIR/backends.toml" --data-dir "$DIR/nodes/notify"
    while read -r kind name region addr; do
        [ "$kind" = pop ] || continue
        start_node "$name" edge --geo "$GEO" --pop "$name" \
            --data-dir "$DIR/nodes/$name" --ca-dir "$DIR/ca"
        wait_healthy "https://$addr" "$name"
        edges+=("{\"region\":\"$region\",\"pop\":\"$name\",\"https\":\"https://$addr\"}")
    done < <("$BIN" geo nodes "$GEO")

    local list
    list=$(IFS=,; echo "${edges[*]}")
    printf '{"edges":[%s],"ca":"%s"}\n' "$list" "$DIR/ca/ca.pem" >"$DIR/endpoints.json"
    log "cluster up: $DIR/endpoints.json"
    cat "$DIR/endpoints.json"
}

stop_pid_file() {
    local file=$1 name pid
    name=$(basename "$file" .pid)
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 150); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not stop in 15 s; killing"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "$name stopped"
    fi
    rm -f "$file"
}

down() {
    local file
    # Edges first (clients get goodbye), then cores.
    for file in "$DIR"/pids/*.pid; do
        [ -e "$file" ] || continue
        grep -q "^pop $(basename "$file" .pid) " <("$BIN" geo nodes "$GEO" 2>/dev/null) &&
            stop_pid_file "$file"
    done
    for file in "$DIR"/pids/*.pid; do
        [ -e "$file" ] && stop_pid_file "$file"
    done
    if [ -e "$DIR/services-started" ]; then
        "$SERVICES" down all
        rm -f "$DIR/services-started"
    fi
    rm -f "$DIR/endpoints.json"
}

status() {
    local file name
    for file in "$DIR"/pids/*.pid; do
        [ -e "$file" ] || continue
        name=$(basename "$file" .pid)
        if pid_alive "$file"; then
            printf '%-24s running (pid %s)\n' "$name" "$(cat "$file")"
        else
            printf '%-24s dead (see %s)\n' "$name" "$DIR/logs/$name.log"
        fi
    done
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
