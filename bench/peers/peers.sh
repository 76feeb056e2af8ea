#!/usr/bin/env bash
# Peer servers that `confab-bench fanout --target PEER` compares confab against, all on
# 127.0.0.1 and all over TLS (wss), installed from Debian packages only (no fetched source):
# Centrifuge 0.15 (a small server over Debian's library), nginx + nchan, NATS, Mosquitto.
#
#   bench/peers/peers.sh up     [centrifuge|nchan|nats|mosquitto|all]   # default: all
#   bench/peers/peers.sh down   [centrifuge|nchan|nats|mosquitto|all]
#   bench/peers/peers.sh status
#
# Everything runtime (TLS CA and certificate, generated configs, logs, pid files, the
# built centrifuge binary and its GOPATH) lives in bench/.peers/; `up` is a no-op for a
# peer already running, `down` ends only the processes whose pid files it wrote. See
# README.md beside this file for ports, configs and the wire protocol of each peer.
set -euo pipefail

# Physical paths (pwd -P): running_pid matches them in the servers' command lines, so a
# symlinked checkout path must not make a running server look foreign.
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd -P)
PEERS=${CONFAB_PEERS_DIR:-$ROOT/bench/.peers}
SELF="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"

HOST=127.0.0.1
CENTRIFUGE_PORT=${CONFAB_PEER_CENTRIFUGE_PORT:-8711}
NCHAN_PORT=${CONFAB_PEER_NCHAN_PORT:-8712}
NATS_PORT=${CONFAB_PEER_NATS_PORT:-8713}
# NATS always opens its native client port too (loopback only, plain TCP).
NATS_CLIENT_PORT=${CONFAB_PEER_NATS_CLIENT_PORT:-8714}
MOSQUITTO_PORT=${CONFAB_PEER_MOSQUITTO_PORT:-8715}
# Mosquitto 2.0.11 refuses to start with only a WebSocket listener ("Unable to start any
# listening sockets"): it gets a plain MQTT one too, loopback only, unused by the benchmark.
MOSQUITTO_PLAIN_PORT=${CONFAB_PEER_MOSQUITTO_PLAIN_PORT:-8716}

# Open-file limit given to each server: 10k+ benchmark connections each need a descriptor
# (nginx two per proxied connection, but nchan proxies nothing).
NOFILE=${CONFAB_PEERS_NOFILE:-200000}
START_TIMEOUT=${CONFAB_PEERS_TIMEOUT:-60}
STOP_TIMEOUT=${CONFAB_PEERS_STOP_TIMEOUT:-20}

ALL_PEERS=(centrifuge nchan nats mosquitto)

log() { printf '[peers] %s\n' "$*" >&2; }
die() { printf '[peers] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------

# Installs missing Debian packages (apt-get update only when something is missing). On a
# machine whose init system honours package postinst scripts, Debian also enables its own
# system services for nginx, nats-server and mosquitto (ports 80, 4222, 1883); they are
# not ours and this script never touches them.
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]} (apt-get)"
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The installed version of Debian package $1.
pkg_version() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    # shellcheck disable=SC2016 # expanded by the child bash, from its arguments
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# True when 127.0.0.1:$1 completes a TLS handshake for SNI "localhost" with a certificate
# that verifies against our CA, as the benchmark client's will.
tls_ready() {
    timeout 5 openssl s_client -connect "$HOST:$1" -servername localhost \
        -verify_hostname localhost -CAfile "$PEERS/tls/ca.pem" -verify_return_error \
        </dev/null >/dev/null 2>&1
}

pid_file() { printf '%s/%s/%s.pid' "$PEERS" "$1" "$1"; }
port_file() { printf '%s/%s/port' "$PEERS" "$1"; }

# Prints the pid of peer $1 if the process in its pid file is alive and really ours: its
# command line names a file under $PEERS/$1/, so a recycled pid is never mistaken for it.
running_pid() {
    local pf pid
    pf=$(pid_file "$1")
    [ -f "$pf" ] || return 1
    pid=$(<"$pf")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qF "$PEERS/$1/" || return 1
    # A zombie (exited, not yet reaped) is not running.
    [ "$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
    printf '%s\n' "$pid"
}

# Whether the process in $1's pid file is alive, whatever its command line says: right
# after the launch it may still be the launching shell's.
pid_alive() {
    local pf pid
    pf=$(pid_file "$1")
    [ -f "$pf" ] || return 1
    pid=$(<"$pf")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -d "/proc/$pid" ] || return 1
    [ "$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

# Milliseconds since the epoch.
now_ms() {
    local t=$EPOCHREALTIME
    echo $((${t%[.,]*} * 1000 + 10#${t#*[.,]} / 1000))
}

# Seconds since $1 (a now_ms value), with one decimal.
since() {
    local d=$(($(now_ms) - $1))
    printf '%d.%d' $((d / 1000)) $((d % 1000 / 100))
}

# Start time of process $1 (field 22 of /proc/PID/stat), to tell it from a recycled pid.
proc_start_time() {
    awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null || true
}

# True once process $1 (started at $2) has fully exited: gone, a zombie, or its pid taken
# by another process.
proc_gone() {
    local stat
    stat=$(awk '{ sub(/^.*\) /, ""); print $1, $20 }' "/proc/$1/stat" 2>/dev/null) || return 0
    [ -z "$stat" ] || [ "${stat%% *}" = Z ] || [ "${stat#* }" != "$2" ]
}

# Raises this shell's open-file limit (soft and hard) to NOFILE; the server exec'd from it
# inherits it. Only root may raise the hard limit: others get what it allows.
raise_nofile() {
    local hard
    hard=$(ulimit -Hn)
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$NOFILE" ]; then
        if ! ulimit -Hn "$NOFILE" 2>/dev/null; then
            echo "[peers] warning: cannot raise the hard open-file limit from $hard to $NOFILE (no CAP_SYS_RESOURCE?): the server gets $hard" >&2
            ulimit -n "$hard"
            return 0
        fi
    fi
    ulimit -n "$NOFILE"
}

# The open-file limit a server launched by this script gets (NOFILE, or less when the hard
# limit cannot be raised: no CAP_SYS_RESOURCE).
effective_nofile() { (raise_nofile 2>/dev/null && ulimit -n); }

# Starts "$@" in its own session (so the caller's Ctrl-C or exit doesn't reach it), with
# the open-file limit raised, detached from our stdin and lock fd, output to $2 (the
# previous start's kept as $2.prev); records the pid. `exec setsid` in a subshell that is
# not a process group leader execs in place, so $! is the server's own pid.
launch() {
    local name=$1 out=$2
    shift 2
    [ -f "$out" ] && mv -f "$out" "$out.prev"
    (cd "$PEERS/$name" && raise_nofile && exec setsid "$@" </dev/null >"$out" 2>&1 9>&-) &
    printf '%s\n' "$!" >"$(pid_file "$name")"
}

log_tail() {
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        printf '\n---- last lines of %s ----\n' "$f" >&2
        tail -n 40 "$f" >&2
    done
}

# Refuses to start on a port that something else already holds: the benchmark would then
# silently measure a stranger.
require_free_ports() {
    local name=$1 port
    shift
    for port in "$@"; do
        for _ in 1 2 3 4 5 6; do
            port_open "$port" || continue 2
            sleep 0.5
        done
        die "$name: port $port on $HOST is already in use by another process (override with CONFAB_PEER_*_PORT)"
    done
}

# ---------------------------------------------------------------------------------------
# TLS: one CA and one leaf for localhost, shared by all peers
# ---------------------------------------------------------------------------------------

# Creates tls/ca.pem (+ ca.key) and tls/server.pem (+ server.key), ECDSA P-256, X.509 v3:
# the CA with CA:TRUE and keyCertSign, the leaf with CA:FALSE, serverAuth and SAN
# DNS:localhost, IP:127.0.0.1. Kept across runs; remade if missing, not verifying against
# the CA, or expiring within 30 days.
ensure_tls() {
    local d="$PEERS/tls"
    if [ -s "$d/ca.pem" ] && [ -s "$d/ca.key" ] && [ -s "$d/server.pem" ] && [ -s "$d/server.key" ] &&
        openssl verify -CAfile "$d/ca.pem" "$d/server.pem" >/dev/null 2>&1 &&
        openssl x509 -in "$d/server.pem" -noout -checkend $((30 * 86400)) >/dev/null 2>&1 &&
        openssl x509 -in "$d/ca.pem" -noout -checkend $((30 * 86400)) >/dev/null 2>&1; then
        return 0
    fi
    log "generating the TLS CA and localhost certificate in $d"
    mkdir -p "$d"
    chmod 700 "$d"
    cat >"$d/openssl.cnf" <<'EOF'
# Generated by bench/peers/peers.sh: extensions of the benchmark peers' CA and leaf.
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF
    local err="$d/openssl.log"
    {
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key" &&
            openssl req -config "$d/openssl.cnf" -new -x509 -key "$d/ca.key" -sha256 -days 3650 \
                -subj "/CN=confab bench peers CA" -extensions ca -out "$d/ca.pem" &&
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/server.key" &&
            openssl req -config "$d/openssl.cnf" -new -key "$d/server.key" -subj /CN=localhost \
                -out "$d/server.csr" &&
            openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
                -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 \
                -extfile "$d/openssl.cnf" -extensions leaf -out "$d/server.pem"
    } >"$err" 2>&1 || { cat "$err" >&2; die "openssl failed to make the certificates"; }
    rm -f "$d/server.csr" "$err"
    # The servers read their key before dropping privileges (nginx's workers need none).
    chmod 644 "$d/ca.pem" "$d/server.pem"
    chmod 600 "$d/ca.key" "$d/server.key"
    chmod 755 "$d"
    openssl verify -CAfile "$d/ca.pem" "$d/server.pem" >/dev/null ||
        die "the generated server.pem does not verify against ca.pem"
}

# ---------------------------------------------------------------------------------------
# Centrifuge 0.15: bench/peers/centrifuge/main.go over Debian's library, GOPATH mode
# ---------------------------------------------------------------------------------------

CENTRIFUGE_PKGS=(
    golang-go golang-github-centrifugal-centrifuge-dev
    # Imported by the library but missing from the Debian package's Depends.
    golang-github-centrifugal-protocol-dev golang-github-igm-sockjs-go-dev
    golang-github-mna-redisc-dev golang-github-fzambia-eagle-dev
)

# Debian's Go (golang-go), not whatever `go` comes first on PATH.
debian_go() {
    local g
    for g in /usr/lib/go/bin/go /usr/lib/go-*/bin/go; do
        [ -x "$g" ] && { printf '%s\n' "$g"; return 0; }
    done
    return 1
}

# Builds centrifuge/centrifuge-peer when main.go, Go or the packaged sources changed.
centrifuge_build() {
    local d="$PEERS/centrifuge" go stamp pkg
    go=$(debian_go) || die "Debian's Go (golang-go) not found under /usr/lib/go"
    stamp=$(
        sha256sum "$SCRIPT_DIR/centrifuge/main.go" | cut -d' ' -f1
        for pkg in "${CENTRIFUGE_PKGS[@]}"; do printf '%s %s\n' "$pkg" "$(pkg_version "$pkg")"; done
    )
    if [ -x "$d/centrifuge-peer" ] && [ -f "$d/build.stamp" ] && [ "$(<"$d/build.stamp")" = "$stamp" ]; then
        return 0
    fi
    log "building centrifuge-peer with $("$go" version | cut -d' ' -f3) (GOPATH mode, Debian's sources)"
    mkdir -p "$PEERS/gopath" "$PEERS/gocache"
    rm -f "$d/build.stamp"
    # GOPATH mode resolves imports in /usr/share/gocode/src (the -dev packages) and needs
    # nothing from the network; GOROOT/GOFLAGS of another Go on this machine must not leak in.
    if ! (cd "$SCRIPT_DIR/centrifuge" && env -u GOROOT -u GOFLAGS -u GOBIN \
        GO111MODULE=off GOPATH="$PEERS/gopath:/usr/share/gocode" GOCACHE="$PEERS/gocache" \
        GOTOOLCHAIN=local GOPROXY=off CGO_ENABLED=0 \
        "$go" build -trimpath -o "$d/centrifuge-peer.partial" .) >"$d/build.log" 2>&1; then
        cat "$d/build.log" >&2
        die "building centrifuge-peer failed (log: $d/build.log)"
    fi
    mv -f "$d/centrifuge-peer.partial" "$d/centrifuge-peer"
    printf '%s\n' "$stamp" >"$d/build.stamp"
}

centrifuge_prepare() {
    apt_install "${CENTRIFUGE_PKGS[@]}"
    mkdir -p "$PEERS/centrifuge/logs"
    centrifuge_build
}

centrifuge_start() {
    local d="$PEERS/centrifuge"
    require_free_ports centrifuge "$CENTRIFUGE_PORT"
    printf '%s\n' "$CENTRIFUGE_PORT" >"$(port_file centrifuge)"
    # Durability: none. Memory engine; per-channel history of 1000 publications for 5
    # minutes (recovery on), presence on, all in process memory, lost on restart.
    launch centrifuge "$d/logs/centrifuge.log" "$d/centrifuge-peer" \
        -addr "$HOST:$CENTRIFUGE_PORT" -cert "$PEERS/tls/server.pem" -key "$PEERS/tls/server.key"
}

centrifuge_ready() { tls_ready "$(<"$(port_file centrifuge)")"; }
centrifuge_logs() { echo "$PEERS/centrifuge/logs/centrifuge.log"; }
centrifuge_version() { echo "centrifuge $(pkg_version golang-github-centrifugal-centrifuge-dev)"; }

# ---------------------------------------------------------------------------------------
# nchan: Debian's nginx with libnginx-mod-nchan, its own prefix and config
# ---------------------------------------------------------------------------------------

nchan_module() {
    local so
    so=$(dpkg -L libnginx-mod-nchan 2>/dev/null | grep -m1 '/ngx_nchan_module\.so$') || true
    [ -n "$so" ] && [ -f "$so" ] || so=/usr/lib/nginx/modules/ngx_nchan_module.so
    [ -f "$so" ] || die "ngx_nchan_module.so not found (package libnginx-mod-nchan)"
    printf '%s\n' "$so"
}

nchan_prepare() {
    apt_install nginx libnginx-mod-nchan
    local d="$PEERS/nchan" module
    module=$(nchan_module)
    mkdir -p "$d/logs" "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
# Generated by bench/peers/peers.sh on each start; edits are overwritten.
# nginx $(pkg_version nginx) + nchan $(pkg_version libnginx-mod-nchan), run in the foreground by
# the script (daemon off), so the master's pid is the one in nchan.pid.
#
# Durability: none. nchan's memory store (no Redis): each channel buffers its last 1000
# messages for 5 minutes in nginx's shared memory, lost on restart.
load_module $module;

daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile $(effective_nofile);
pid $d/nginx.pid;
error_log $d/logs/error.log notice;

events {
    worker_connections 65536;
    multi_accept on;
}

http {
    access_log off;
    client_body_temp_path $d/tmp/client_body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    tcp_nodelay on;
    # Messages and channels live here (nchan's default is 128M).
    nchan_shared_memory_size 256M;

    server {
        # backlog as the other peers get (somaxconn): 10k connects arrive in bursts.
        listen $HOST:$NCHAN_PORT ssl backlog=4096;
        server_name localhost;
        ssl_certificate $PEERS/tls/server.pem;
        ssl_certificate_key $PEERS/tls/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        # Publish bodies (HTTP) up to 1 MiB; WebSocket frames are not limited by this.
        client_max_body_size 1m;

        nchan_message_buffer_length 1000;
        nchan_message_timeout 5m;
        # A new subscriber starts with the next message, not the buffered ones.
        nchan_subscriber_first_message newest;
        # nchan accepts permessage-deflate when a client offers it, but with this off (its
        # default) it still sends every frame uncompressed, like the other peers.
        nchan_deflate_message_for_websocket off;

        # wss://localhost:PORT/ws/CHANNEL: subscribes to CHANNEL, and every text frame the
        # client sends is published to it.
        location ~ ^/ws/(\\w+)\$ {
            nchan_pubsub websocket;
            nchan_channel_id \$1;
        }

        # POST https://localhost:PORT/pub/CHANNEL: publishes the request body (for curl).
        location ~ ^/pub/(\\w+)\$ {
            nchan_publisher http;
            nchan_channel_id \$1;
        }
    }
}
EOF
    # Fails here, with nginx's message, rather than at launch.
    local t
    if ! t=$(nginx -t -q -p "$d/" -c "$d/nginx.conf" 2>&1); then
        printf '%s\n' "$t" >&2
        die "nginx rejected $d/nginx.conf"
    fi
}

nchan_start() {
    local d="$PEERS/nchan"
    require_free_ports nchan "$NCHAN_PORT"
    printf '%s\n' "$NCHAN_PORT" >"$(port_file nchan)"
    launch nchan "$d/logs/stdout.log" /usr/sbin/nginx -p "$d/" -c "$d/nginx.conf"
}

nchan_ready() { tls_ready "$(<"$(port_file nchan)")"; }
nchan_logs() { echo "$PEERS/nchan/logs/error.log" "$PEERS/nchan/logs/stdout.log"; }
nchan_version() { echo "nginx $(pkg_version nginx), nchan $(pkg_version libnginx-mod-nchan)"; }

# ---------------------------------------------------------------------------------------
# NATS: Debian's nats-server, WebSocket listener with TLS, no JetStream
# ---------------------------------------------------------------------------------------

nats_prepare() {
    apt_install nats-server
    local d="$PEERS/nats"
    mkdir -p "$d/logs"
    cat >"$d/nats.conf" <<EOF
# Generated by bench/peers/peers.sh on each start; edits are overwritten.
# nats-server $(pkg_version nats-server).
#
# Durability: none. Core NATS only (JetStream off): a message goes to the subscribers
# connected at that moment and is not stored anywhere; no history.
server_name: confab-bench-peer
# The native client port (plain TCP, loopback only); the benchmark uses the WebSocket one.
listen: "$HOST:$NATS_CLIENT_PORT"
max_connections: 100000
max_payload: 1048576
# Per-connection buffered bytes before a slow consumer is cut (the default).
max_pending: 67108864
write_deadline: "10s"
log_file: "$d/logs/nats.log"
pid_file: "$d/nats-server.pid"

websocket {
    listen: "$HOST:$NATS_PORT"
    tls {
        cert_file: "$PEERS/tls/server.pem"
        key_file: "$PEERS/tls/server.key"
    }
    # Benchmark clients send no Origin header; compression off (as for the other peers).
    same_origin: false
    compression: false
}
EOF
}

nats_start() {
    local d="$PEERS/nats"
    require_free_ports nats "$NATS_PORT" "$NATS_CLIENT_PORT"
    printf '%s\n' "$NATS_PORT" >"$(port_file nats)"
    [ -f "$d/logs/nats.log" ] && mv -f "$d/logs/nats.log" "$d/logs/nats.log.prev"
    launch nats "$d/logs/stdout.log" /usr/sbin/nats-server -c "$d/nats.conf"
}

nats_ready() { tls_ready "$(<"$(port_file nats)")"; }
nats_logs() { echo "$PEERS/nats/logs/nats.log" "$PEERS/nats/logs/stdout.log"; }
nats_version() { echo "nats-server $(pkg_version nats-server)"; }

# ---------------------------------------------------------------------------------------
# Mosquitto: Debian's mosquitto, one MQTT-over-WebSocket listener with TLS
# ---------------------------------------------------------------------------------------

mosquitto_prepare() {
    apt_install mosquitto
    local d="$PEERS/mosquitto"
    mkdir -p "$d/logs"
    cat >"$d/mosquitto.conf" <<EOF
# Generated by bench/peers/peers.sh on each start; edits are overwritten.
# mosquitto $(pkg_version mosquitto), run in the foreground (no -d) by the script.
#
# Durability: none. persistence false, and the benchmark uses QoS 0 without retain: a
# message goes to the subscribers connected at that moment and is not stored; no history.
per_listener_settings false
allow_anonymous true
persistence false
# Stays root (started as root it would switch to the user mosquitto); the script's files
# are root's.
user root
log_dest file $d/logs/mosquitto.log
log_type error
log_type warning
log_type notice
log_type information
connection_messages false
websockets_log_level 0
# max_packet_size is left at its default: no limit below MQTT's own (256 MiB).
set_tcp_nodelay true

# MQTT over WebSocket (subprotocol "mqtt") with TLS, loopback only: what the benchmark
# uses. Its libwebsockets binds the address only with socket_domain ipv4 (else it listens
# on all addresses, IPv6 included).
listener $MOSQUITTO_PORT $HOST
protocol websockets
socket_domain ipv4
certfile $PEERS/tls/server.pem
keyfile $PEERS/tls/server.key
max_connections -1

# Plain MQTT, loopback only, unused by the benchmark: 2.0.11 will not start with a
# WebSocket listener alone. Listing listeners means the default one on 1883 is not opened.
listener $MOSQUITTO_PLAIN_PORT $HOST
protocol mqtt
socket_domain ipv4
max_connections -1
EOF
}

mosquitto_start() {
    local d="$PEERS/mosquitto"
    require_free_ports mosquitto "$MOSQUITTO_PORT" "$MOSQUITTO_PLAIN_PORT"
    printf '%s\n' "$MOSQUITTO_PORT" >"$(port_file mosquitto)"
    [ -f "$d/logs/mosquitto.log" ] && mv -f "$d/logs/mosquitto.log" "$d/logs/mosquitto.log.prev"
    launch mosquitto "$d/logs/stdout.log" /usr/sbin/mosquitto -c "$d/mosquitto.conf"
}

mosquitto_ready() { tls_ready "$(<"$(port_file mosquitto)")"; }
mosquitto_logs() { echo "$PEERS/mosquitto/logs/mosquitto.log" "$PEERS/mosquitto/logs/stdout.log"; }
mosquitto_version() { echo "mosquitto $(pkg_version mosquitto)"; }

# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------

peers_of() {
    case "${1:-all}" in
        all) echo "${ALL_PEERS[@]}" ;;
        centrifuge | nchan | nats | mosquitto) echo "$1" ;;
        *) die "unknown peer '$1' (centrifuge, nchan, nats, mosquitto or all)" ;;
    esac
}

configured_port() {
    case $1 in
        centrifuge) echo "$CENTRIFUGE_PORT" ;;
        nchan) echo "$NCHAN_PORT" ;;
        nats) echo "$NATS_PORT" ;;
        mosquitto) echo "$MOSQUITTO_PORT" ;;
    esac
}

# Waits until every peer named in "$@" completes a verified TLS handshake. A peer that
# dies, or is not ready within START_TIMEOUT, fails the command with the tails of its
# logs; one that timed out is stopped, so no half-started server outlives a failed `up`.
wait_all_ready() {
    local pending=("$@") start name still logs deadline
    start=$(now_ms)
    deadline=$(($(now_ms) + START_TIMEOUT * 1000))
    while [ ${#pending[@]} -gt 0 ]; do
        still=()
        for name in "${pending[@]}"; do
            read -r -a logs <<<"$("${name}_logs")"
            if ! pid_alive "$name"; then
                log_tail "${logs[@]}"
                rm -f "$(pid_file "$name")"
                die "$name exited during startup (logs above; all logs in $PEERS/$name)"
            elif "${name}_ready"; then
                log "$name ready on wss://localhost:$(<"$(port_file "$name")") after $(since "$start")s ($("${name}_version"))"
            elif [ "$(now_ms)" -ge "$deadline" ]; then
                log_tail "${logs[@]}"
                log "$name not ready after ${START_TIMEOUT}s: stopping it"
                stop_one "$name"
                die "$name did not accept TLS within ${START_TIMEOUT}s (logs above; CONFAB_PEERS_TIMEOUT raises the limit)"
            else
                still+=("$name")
            fi
        done
        pending=("${still[@]}")
        [ ${#pending[@]} -eq 0 ] || sleep 0.2
    done
}

cmd_up() {
    local names name pid port todo=()
    read -r -a names <<<"$(peers_of "${1:-all}")"
    for name in "${names[@]}"; do
        if pid=$(running_pid "$name"); then
            port=$(<"$(port_file "$name")")
            log "$name already running (pid $pid) on $HOST:$port"
            if [ "$port" != "$(configured_port "$name")" ]; then
                log "warning: $name runs on port $port, not the requested $(configured_port "$name"); 'down $name' first to move it"
            fi
            continue
        fi
        rm -f "$(pid_file "$name")"
        todo+=("$name")
    done
    [ ${#todo[@]} -gt 0 ] || return 0
    apt_install openssl
    ensure_tls
    # Packages, builds and configs first, so the launches below happen together.
    for name in "${todo[@]}"; do
        "${name}_prepare"
    done
    for name in "${todo[@]}"; do
        "${name}_start"
        log "$name starting (pid $(<"$(pid_file "$name")"), port $(configured_port "$name"))"
    done
    wait_all_ready "${todo[@]}"
    log "CA for clients: $PEERS/tls/ca.pem (server name: localhost)"
}

# Ends the process in the pid file: SIGTERM, then SIGKILL after STOP_TIMEOUT seconds;
# returns once the process is gone. nginx's workers follow their master.
stop_one() {
    local name=$1 pid start born deadline
    if ! pid=$(running_pid "$name"); then
        log "$name not running"
        rm -f "$(pid_file "$name")"
        return 0
    fi
    log "stopping $name (pid $pid)"
    start=$(now_ms)
    born=$(proc_start_time "$pid")
    deadline=$(($(now_ms) + STOP_TIMEOUT * 1000))
    kill -TERM "$pid" 2>/dev/null || true
    while ! proc_gone "$pid" "$born"; do
        if [ "$(now_ms)" -ge "$deadline" ]; then
            log "$name did not exit within ${STOP_TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            while ! proc_gone "$pid" "$born"; do sleep 0.1; done
            break
        fi
        sleep 0.1
    done
    rm -f "$(pid_file "$name")"
    log "$name stopped after $(since "$start")s"
}

cmd_down() {
    local names name pids=()
    read -r -a names <<<"$(peers_of "${1:-all}")"
    for name in "${names[@]}"; do
        stop_one "$name" &
        pids+=("$!")
    done
    local rc=0 p
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    return "$rc"
}

cmd_status() {
    local name pid port
    for name in "${ALL_PEERS[@]}"; do
        if pid=$(running_pid "$name"); then
            port=$(<"$(port_file "$name")")
            printf '%-10s %-5s running  pid %s  wss://localhost:%s\n' "$name" "$port" "$pid" "$port"
        elif [ -f "$(pid_file "$name")" ]; then
            printf '%-10s %-5s stopped  (stale pid file)\n' "$name" "$(configured_port "$name")"
        else
            printf '%-10s %-5s stopped\n' "$name" "$(configured_port "$name")"
        fi
    done
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case $cmd in
        up | down)
            # Validated here: peers_of's own die would only end a $(...) subshell.
            case "${1:-all}" in
                all | centrifuge | nchan | nats | mosquitto) ;;
                *) die "unknown peer '$1' (centrifuge, nchan, nats, mosquitto or all)" ;;
            esac
            ;;
        status) ;;
        *)
            sed -n '2,13s/^# \{0,1\}//p' "$SELF" >&2
            exit 2
            ;;
    esac
    mkdir -p "$PEERS"
    # One up/down at a time per bench/.peers: they'd race on ports and pid files. The
    # servers are started with fd 9 closed, so they never hold the lock.
    if [ "$cmd" = up ] || [ "$cmd" = down ]; then
        exec 9>"$PEERS/.lock"
        flock 9
    fi
    "cmd_$cmd" "$@"
}

main "$@"
