#!/usr/bin/env bash
# Real Redis, Apache Cassandra 5 and Apache Kafka 4 (KRaft) on 127.0.0.1 for confab's
# scale-out driver tests, with no Docker and no downloads beyond Debian and Maven Central.
#
#   scripts/services/services.sh up     [redis|cassandra|kafka|all]   # default: all
#   scripts/services/services.sh down   [redis|cassandra|kafka|all]
#   scripts/services/services.sh status
#   scripts/services/services.sh check  [redis|cassandra|kafka|all]   # real round trips
#   scripts/services/services.sh cql 'STATEMENT'...     # text results, tab-separated
#   scripts/services/services.sh nodetool ARGS...       # needs CONFAB_CASSANDRA_JMX_PORT
#
# Everything (jars, configs, data, logs, pid files) lives in .services/ next to the repo
# root; `up` is a no-op for a service already running, `down` ends only the processes whose
# pid files it wrote. See README.md beside this file for ports and environment variables.
set -euo pipefail

# Physical paths (pwd -P): running_pid matches them in the servers' command lines, so a
# symlinked checkout path must not make a running server look foreign.
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd -P)
SVC=${CONFAB_SERVICES_DIR:-$ROOT/.services}
SELF="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"

HOST=127.0.0.1
REDIS_PORT=${CONFAB_REDIS_PORT:-6390}
CASSANDRA_PORT=${CONFAB_CASSANDRA_PORT:-9042}
CASSANDRA_STORAGE_PORT=${CONFAB_CASSANDRA_STORAGE_PORT:-7000}
# Local-only JMX, for nodetool while debugging: off (0) unless a port is given, since it
# costs about a second per start and one more port to collide on.
CASSANDRA_JMX_PORT=${CONFAB_CASSANDRA_JMX_PORT:-0}
KAFKA_PORT=${CONFAB_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${CONFAB_KAFKA_CONTROLLER_PORT:-9094}

# Pinned so that every machine runs the same servers; both resolve on Maven Central.
CASSANDRA_VERSION=${CONFAB_CASSANDRA_VERSION:-5.0.9}
KAFKA_VERSION=${CONFAB_KAFKA_VERSION:-4.1.1}
# Kafka's poms leave the SLF4J binding to the distribution; this is the log4j2 its jars use.
KAFKA_LOG4J_VERSION=${CONFAB_KAFKA_LOG4J_VERSION:-2.24.3}

# Small heaps: the tests run beside cargo builds on a 2-core, 24 GiB machine.
CASSANDRA_HEAP=${CONFAB_CASSANDRA_HEAP:-1g}
KAFKA_HEAP=${CONFAB_KAFKA_HEAP:-512m}
# Cold starts on a busy 2-core machine can be slow; fail loudly rather than hang.
START_TIMEOUT=${CONFAB_SERVICES_TIMEOUT:-240}
STOP_TIMEOUT=${CONFAB_SERVICES_STOP_TIMEOUT:-60}

ALL_SERVICES=(redis cassandra kafka)

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------

# Installs missing Debian packages (apt-get update only when something is missing).
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

# Cassandra 5.0 runs on Java 11 or 17 only, Kafka 4 brokers need 17+: pick a JDK 17
# (CONFAB_JAVA, JAVA_HOME, PATH, then Debian's), installing Debian's if there is none.
find_java() {
    [ -n "${JAVA:-}" ] && return 0
    local cand attempt
    for attempt in 1 2; do
        for cand in "${CONFAB_JAVA:-}" "${JAVA_HOME:+$JAVA_HOME/bin/java}" \
            "$(command -v java || true)" /usr/lib/jvm/java-17-openjdk-*/bin/java; do
            if [ -z "$cand" ] || [ ! -x "$cand" ]; then continue; fi
            if "$cand" -version 2>&1 | head -n 1 | grep -q '"17[."]'; then
                JAVA=$cand
                return 0
            fi
        done
        [ "$attempt" = 1 ] && apt_install openjdk-17-jre-headless
    done
    die "no Java 17 found (set CONFAB_JAVA to a JDK 17 java binary)"
}

# The running JDK's full version (e.g. 17.0.15), to key caches that depend on it.
java_version() {
    "$JAVA" -version 2>&1 | sed -n '1s/.*version "\([^"]*\)".*/\1/p'
}

# Appends to `opts` what makes a JVM server start fast on 2 cores (service $1, version $2):
fast_start_opts() {
    # Class loading dominates a warm start. The first run that exits cleanly (`down`)
    # dumps the classes it loaded into an AppCDS archive; later starts map it. A stale or
    # broken archive is ignored by the JVM (-Xshare:auto); the name carries the versions,
    # so an upgrade makes a new one. CONFAB_SERVICES_CDS=0 turns this off.
    if [ "${CONFAB_SERVICES_CDS:-1}" = 1 ]; then
        local cds
        cds="$SVC/$1/cds-$2-$(java_version).jsa"
        if [ -s "$cds" ]; then
            opts+=(-Xshare:auto "-XX:SharedArchiveFile=$cds")
        else
            # Dumped under a temporary name: stop_one keeps it only after a clean exit,
            # so a JVM killed mid-dump never leaves a truncated archive behind.
            rm -f "$cds.partial"
            opts+=("-XX:ArchiveClassesAtExit=$cds.partial")
        fi
    fi
    # C1 only: C2 compiling the startup path competes for the 2 cores and costs seconds
    # per start; tests run short requests where C2's code barely matters. Benchmarks set
    # CONFAB_SERVICES_FAST_JIT=0 for the full tiered JIT.
    if [ "${CONFAB_SERVICES_FAST_JIT:-1}" = 1 ]; then
        opts+=(-XX:TieredStopAtLevel=1)
    fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    # shellcheck disable=SC2016 # expanded by the child bash, from its arguments
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

pid_file() { printf '%s/%s/%s.pid' "$SVC" "$1" "$1"; }
port_file() { printf '%s/%s/port' "$SVC" "$1"; }

# Prints the pid of service $1 if the process in its pid file is alive and really ours:
# its command line names a file under $SVC, so a recycled pid is never mistaken for it.
running_pid() {
    local pf pid
    pf=$(pid_file "$1")
    [ -f "$pf" ] || return 1
    pid=$(<"$pf")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qF "$SVC/$1/" || return 1
    # A zombie (exited, not yet reaped) is not running.
    [ "$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
    printf '%s\n' "$pid"
}

# Whether the process in NAME's pid file is alive, whatever its command line says: right
# after the launch its command line may still be the launching shell's, so during startup
# `running_pid` (which checks it) would call a server that is still exec'ing dead.
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

# Start time of process $1 (field 22 of /proc/PID/stat), to tell it from a recycled pid.
proc_start_time() {
    awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null || true
}

# True once process $1 (started at $2) has fully exited: gone, a zombie, or its pid taken
# by another process. Stricter than running_pid, whose command-line check already fails
# while a dying JVM still holds its sockets (the kernel frees memory before files).
proc_gone() {
    local stat
    stat=$(awk '{ sub(/^.*\) /, ""); print $1, $20 }' "/proc/$1/stat" 2>/dev/null) || return 0
    [ -z "$stat" ] || [ "${stat%% *}" = Z ] || [ "${stat#* }" != "$2" ]
}

# Starts "$@" in its own session (so the caller's Ctrl-C or exit doesn't reach it),
# detached from our stdin and lock fd, with output to $2 (the previous start's kept as
# $2.prev); records the pid. `exec setsid` in a subshell that is not a process group
# leader execs in place, so $! is the server's own pid.
launch() {
    local name=$1 out=$2
    shift 2
    [ -f "$out" ] && mv -f "$out" "$out.prev"
    (cd "$SVC/$name" && exec setsid "$@" </dev/null >"$out" 2>&1 9>&-) &
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

# Seconds since $1 (a now_ms value), with one decimal.
since() {
    local d=$(($(now_ms) - $1))
    printf '%d.%d' $((d / 1000)) $((d % 1000 / 100))
}

# Waits until every service named in "$@" passes its <name>_ready probe, polling them
# all together so each is reported as soon as it is ready. A service that dies, or is
# not ready within START_TIMEOUT, fails the command with the tails of its logs; one that
# timed out is stopped, so no half-started server outlives a failed `up`.
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
                die "$name exited during startup (logs above; all logs in $SVC/$name)"
            elif "${name}_ready"; then
                log "$name ready on $HOST:$(<"$(port_file "$name")") after $(since "$start")s"
            elif [ "$(now_ms)" -ge "$deadline" ]; then
                log_tail "${logs[@]}"
                log "$name not ready after ${START_TIMEOUT}s: stopping it"
                stop_one "$name"
                die "$name did not become ready within ${START_TIMEOUT}s (logs above; CONFAB_SERVICES_TIMEOUT raises the limit)"
            else
                still+=("$name")
            fi
        done
        pending=("${still[@]}")
        [ ${#pending[@]} -eq 0 ] || sleep 0.2
    done
}

# Refuses to start on a port that something else already holds: the tests would then
# silently talk to a stranger.
require_free_ports() {
    local name=$1 port
    shift
    for port in "$@"; do
        # A few tries: a server stopped a moment ago by someone else may still be closing.
        for _ in 1 2 3 4 5 6; do
            port_open "$port" || continue 2
            sleep 0.5
        done
        die "$name: port $port on $HOST is already in use by another process (override with the CONFAB_*_PORT variables)"
    done
}

# Downloads coordinates "$@" (group:artifact:version) and their runtime dependencies into
# $SVC/jars/$1 once. The `.complete` marker, written last, records the coordinates, so a
# later run with the same list never starts Maven (offline and fast), and an interrupted
# download is redone rather than half-used.
fetch_jars() {
    local name=$1
    shift
    local dir="$SVC/jars/$name" want
    want=$(printf '%s\n' "$@")
    if [ -f "$dir/.complete" ] && [ "$(<"$dir/.complete")" = "$want" ]; then
        return 0
    fi
    command -v mvn >/dev/null || apt_install maven
    log "fetching $* and dependencies with Maven into $dir"
    local work="$SVC/maven/$name" coord g a v deps=""
    mkdir -p "$work"
    for coord in "$@"; do
        IFS=: read -r g a v <<<"$coord"
        deps+="    <dependency><groupId>$g</groupId><artifactId>$a</artifactId><version>$v</version></dependency>
"
    done
    cat >"$work/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/services/services.sh: only used to resolve the jars of $name. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.confab.services</groupId>
  <artifactId>$name</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
$deps  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>3.6.1</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
EOF
    local mvn_args=(-B -q -f "$work/pom.xml")
    [ -n "${CONFAB_MAVEN_REPO:-}" ] && mvn_args+=("-Dmaven.repo.local=$CONFAB_MAVEN_REPO")
    rm -rf "$dir.partial"
    if ! mvn "${mvn_args[@]}" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$dir.partial" >"$work/mvn.log" 2>&1; then
        tail -n 30 "$work/mvn.log" >&2
        die "Maven could not fetch the $name jars (full log: $work/mvn.log)"
    fi
    printf '%s\n' "$want" >"$dir.partial/.complete"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    # Class archives made from the old jars no longer match them (see fast_start_opts).
    rm -f "$SVC/${name%%-*}"/cds-*.jsa
}

# Rewrites .services/endpoints.env from the services that are running now, each with the
# port it was really started on (recorded in its port file), for tests to `source`.
write_endpoints() {
    local f="$SVC/endpoints.env" tmp
    tmp="$f.tmp"
    {
        echo "# Written by scripts/services/services.sh; lists only the services running."
        if running_pid redis >/dev/null; then
            echo "CONFAB_REDIS_URL=redis://$HOST:$(<"$(port_file redis)")"
        fi
        if running_pid cassandra >/dev/null; then
            echo "CONFAB_CASSANDRA_NODES=$HOST:$(<"$(port_file cassandra)")"
        fi
        if running_pid kafka >/dev/null; then
            echo "CONFAB_KAFKA_BROKERS=$HOST:$(<"$(port_file kafka)")"
        fi
    } >"$tmp"
    mv "$tmp" "$f"
}

# ---------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------

redis_prepare() {
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        apt_install redis-server redis-tools
    fi
    local d="$SVC/redis"
    mkdir -p "$d"
    # No persistence: the tests own their data. set-proc-title no keeps the command line
    # (and so the config path under .services/) visible for running_pid's ownership check.
    cat >"$d/redis.conf" <<EOF
# Generated by scripts/services/services.sh on each start; edits are overwritten.
bind $HOST
port $REDIS_PORT
protected-mode yes
daemonize no
set-proc-title no
save ""
appendonly no
dir "$d"
logfile "$d/redis.log"
databases 16
EOF
}

redis_start() {
    require_free_ports redis "$REDIS_PORT"
    printf '%s\n' "$REDIS_PORT" >"$(port_file redis)"
    [ -f "$SVC/redis/redis.log" ] && mv -f "$SVC/redis/redis.log" "$SVC/redis/redis.log.prev"
    launch redis "$SVC/redis/stdout.log" redis-server "$SVC/redis/redis.conf"
}

redis_ready() {
    [ "$(redis-cli -h "$HOST" -p "$(<"$(port_file redis)")" ping 2>/dev/null)" = PONG ]
}

redis_logs() { echo "$SVC/redis/redis.log" "$SVC/redis/stdout.log"; }

redis_check() {
    local port key val
    port=$(<"$(port_file redis)")
    key="confab:services-check:$$"
    [ "$(redis-cli -h "$HOST" -p "$port" PING)" = PONG ] || die "redis: PING failed"
    [ "$(redis-cli -h "$HOST" -p "$port" SET "$key" hello EX 60)" = OK ] || die "redis: SET failed"
    val=$(redis-cli -h "$HOST" -p "$port" GET "$key")
    [ "$val" = hello ] || die "redis: GET returned '$val'"
    redis-cli -h "$HOST" -p "$port" DEL "$key" >/dev/null
    log "redis check ok: PING, SET, GET on $HOST:$port ($(redis-cli -h "$HOST" -p "$port" INFO server | tr -d '\r' | grep '^redis_version:'))"
}

# ---------------------------------------------------------------------------------------
# Cassandra
# ---------------------------------------------------------------------------------------

cassandra_fetch() {
    fetch_jars "cassandra-$CASSANDRA_VERSION" "org.apache.cassandra:cassandra-all:$CASSANDRA_VERSION"
}

cassandra_prepare() {
    find_java
    cassandra_fetch
    local d="$SVC/cassandra"
    mkdir -p "$d/conf" "$d/logs" "$d/data" "$d/commitlog" "$d/saved_caches" "$d/hints" \
        "$d/cdc_raw" "$d/tmp"
    # A single node on loopback, sized for a shared 2-core machine. Options left out take
    # Cassandra 5.0's own defaults.
    cat >"$d/conf/cassandra.yaml" <<EOF
# Generated by scripts/services/services.sh on each start; edits are overwritten.
cluster_name: confab-test
# Random tokens (no allocation algorithm) are instant for one node.
num_tokens: 16
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
# A seed never bootstraps; saying so skips the bootstrap path entirely.
auto_bootstrap: false
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
role_manager: CassandraRoleManager
network_authorizer: AllowAllNetworkAuthorizer
data_file_directories:
  - $d/data
commitlog_directory: $d/commitlog
saved_caches_directory: $d/saved_caches
hints_directory: $d/hints
cdc_raw_directory: $d/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
# Smaller preallocated segments: less disk and a quicker first start.
commitlog_segment_size: 16MiB
# Bounds the commit log's disk use (the default is up to 8GiB): flushes come sooner.
commitlog_total_space: 256MiB
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$HOST:$CASSANDRA_STORAGE_PORT"
listen_address: $HOST
rpc_address: $HOST
storage_port: $CASSANDRA_STORAGE_PORT
start_native_transport: true
native_transport_port: $CASSANDRA_PORT
endpoint_snitch: SimpleSnitch
# Tests create and drop keyspaces all the time; snapshots on drop/truncate only cost disk.
auto_snapshot: false
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
concurrent_materialized_view_writes: 8
concurrent_compactors: 1
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
key_cache_size: 16MiB
row_cache_size: 0MiB
counter_cache_size: 4MiB
prepared_statements_cache_size: 8MiB
disk_failure_policy: stop
commit_failure_policy: stop
EOF
    # Tools (nodetool) log warnings only, to stderr.
    cat >"$d/conf/logback-tools.xml" <<'EOF'
<configuration>
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDERR"/></root>
</configuration>
EOF
    cat >"$d/conf/logback.xml" <<EOF
<!-- Generated by scripts/services/services.sh: INFO to logs/system.log, bounded in size. -->
<configuration scan="false">
  <appender name="SYSTEMLOG" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>$d/logs/system.log</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.FixedWindowRollingPolicy">
      <fileNamePattern>$d/logs/system.log.%i</fileNamePattern>
      <minIndex>1</minIndex>
      <maxIndex>3</maxIndex>
    </rollingPolicy>
    <triggeringPolicy class="ch.qos.logback.core.rolling.SizeBasedTriggeringPolicy">
      <maxFileSize>20MB</maxFileSize>
    </triggeringPolicy>
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="SYSTEMLOG"/>
  </root>
  <logger name="org.apache.cassandra" level="INFO"/>
</configuration>
EOF
}

cassandra_start() {
    local d="$SVC/cassandra" jars="$SVC/jars/cassandra-$CASSANDRA_VERSION" extra=()
    local ports=("$CASSANDRA_PORT" "$CASSANDRA_STORAGE_PORT")
    [ "$CASSANDRA_JMX_PORT" != 0 ] && ports+=("$CASSANDRA_JMX_PORT")
    require_free_ports cassandra "${ports[@]}"
    printf '%s\n' "$CASSANDRA_PORT" >"$(port_file cassandra)"
    printf '%s\n' "$CASSANDRA_JMX_PORT" >"$d/jmx_port"
    # A fresh system.log per start, so readiness looks only at this start's lines.
    [ -f "$d/logs/system.log" ] && mv "$d/logs/system.log" "$d/logs/system.log.prev"
    local opts=(
        # conf/jvm-server.options (5.0), less -XX:+AlwaysPreTouch (it slows every start by
        # touching the whole heap) and -XX:-UseBiasedLocking/-XX:+UseNUMA (no-ops on 17).
        -ea -da:net.openhft...
        -XX:+UseThreadPriorities -XX:+HeapDumpOnOutOfMemoryError "-XX:HeapDumpPath=$d/logs"
        -Xss256k -XX:+UseTLAB -XX:+ResizeTLAB -XX:+PerfDisableSharedMem
        -Djava.net.preferIPv4Stack=true
        # conf/jvm17-server.options (5.0): G1, the JPMS exports/opens Cassandra needs on 17,
        # and Netty's settings.
        -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1
        -XX:G1HeapRegionSize=16m -XX:G1RSetUpdatingPauseTimePercent=5
        -XX:MaxGCPauseMillis=300 -XX:InitiatingHeapOccupancyPercent=70
        -Djdk.attach.allowAttachSelf=true
        --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
        --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
        --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
        --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
        --add-exports java.sql/java.sql=ALL-UNNAMED
        --add-exports java.base/java.lang.ref=ALL-UNNAMED
        --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
        --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
        --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
        --add-opens java.base/java.lang.module=ALL-UNNAMED
        --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
        --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
        --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
        --add-opens java.base/jdk.internal.math=ALL-UNNAMED
        --add-opens java.base/jdk.internal.module=ALL-UNNAMED
        --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
        --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
        --add-opens java.base/sun.nio.ch=ALL-UNNAMED
        --add-opens java.base/java.io=ALL-UNNAMED
        --add-opens java.base/java.lang.reflect=ALL-UNNAMED
        --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
        --add-opens java.base/java.lang=ALL-UNNAMED
        --add-opens java.base/java.util=ALL-UNNAMED
        -Dio.netty.tryReflectionSetAccessible=true
        -Dio.netty.allocator.useCacheForAllThreads=true
        -Dio.netty.allocator.maxOrder=11
        # bin/cassandra.in.sh: jamm measures object sizes for memtable accounting.
        "-javaagent:$jars/jamm-$(jar_version "$jars" jamm).jar"
        # Small fixed-floor heap instead of cassandra-env.sh's 1/4 of RAM; exit on OOM
        # rather than limp on (cassandra-env.sh kills -9 for the same reason).
        -Xms512m "-Xmx$CASSANDRA_HEAP" -XX:+ExitOnOutOfMemoryError
        -Dcassandra.available_processors="$(nproc)"
        # What bin/cassandra passes, pointed at .services/cassandra.
        "-Dcassandra.config=file://$d/conf/cassandra.yaml"
        "-Dlogback.configurationFile=file://$d/conf/logback.xml"
        "-Dcassandra.logdir=$d/logs" "-Dcassandra.storagedir=$d"
        -Dcassandra-foreground=yes
        # JNA and Chronicle unpack native code into the temp dir: keep it under .services.
        "-Djava.io.tmpdir=$d/tmp" "-Djna.tmpdir=$d/tmp"
        # A single node has nobody to gossip with: don't wait for gossip to settle.
        -Dcassandra.skip_wait_for_gossip_to_settle=0
        # ... and nobody to announce a shutdown to: `down` needn't wait 2s for it.
        -Dcassandra.shutdown_announce_in_ms=0
        # Every start otherwise measures a memtable row's overhead by filling a test
        # memtable (~1.5s here); 180 bytes is what it measures on this JVM.
        -Dcassandra.memtable.row_overhead_size=180
        # Schema changes skip the blocking flush of the system tables (the commit log
        # still has them): tests create and drop keyspaces and tables all the time.
        -Dcassandra.unsafesystem=true
    )
    # jamm's agent only measures objects (it transforms no classes), so class archiving
    # beside it is safe; the JVM wants that said, at dump and at use alike.
    opts+=(-XX:+UnlockDiagnosticVMOptions -XX:+AllowArchivingWithJavaAgent)
    fast_start_opts cassandra "$CASSANDRA_VERSION"
    if [ "$CASSANDRA_JMX_PORT" != 0 ]; then
        # cassandra-env.sh's LOCAL_JMX=yes: JMX on loopback only, for nodetool.
        opts+=("-Dcassandra.jmx.local.port=$CASSANDRA_JMX_PORT"
            -Dcom.sun.management.jmxremote.authenticate=false)
    fi
    # Extra JVM options from the environment (last, so they win).
    read -r -a extra <<<"${CONFAB_CASSANDRA_JVM_OPTS:-}"
    opts+=("${extra[@]}")
    # As root, Cassandra's unconditional mlockall() succeeds and faults in and pins the
    # whole committed heap at startup (a slower start and memory the OS can never
    # reclaim, beside cargo builds). Without CAP_IPC_LOCK it fails against the small
    # RLIMIT_MEMLOCK and Cassandra only logs a warning.
    local nolock=()
    if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
        nolock=(setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock --)
    fi
    # cassandra-env.sh caps glibc arenas: many threads otherwise bloat native memory.
    MALLOC_ARENA_MAX=4 launch cassandra "$d/logs/stdout.log" \
        "${nolock[@]}" "$JAVA" "${opts[@]}" -cp "$jars/*" org.apache.cassandra.service.CassandraDaemon
}

# Version of the one jar named $2-<version>.jar in directory $1 (jamm's file name has it).
jar_version() {
    local f
    f=$(find "$1" -maxdepth 1 -name "$2-[0-9]*.jar" -printf '%f\n' | head -n 1)
    [ -n "$f" ] || die "no $2 jar in $1"
    f=${f#"$2"-}
    printf '%s\n' "${f%.jar}"
}

cassandra_ready() {
    grep -q 'Starting listening for CQL clients' "$SVC/cassandra/logs/system.log" 2>/dev/null ||
        return 1
    cql_probe >/dev/null 2>&1
}

cassandra_logs() { echo "$SVC/cassandra/logs/system.log" "$SVC/cassandra/logs/stdout.log"; }

# A real CQL client in bash (native protocol v4; no driver, cqlsh or Python needed):
# OPTIONS -> SUPPORTED, STARTUP -> READY, then each statement as a QUERY at consistency
# ONE. Rows print one per line, cells tab-separated, as text (fine for text columns); a
# statement without rows prints nothing. Runs in a child bash under `timeout` so that a
# server that accepts but never answers can't hang us.
cql() {
    timeout "${CQL_TIMEOUT:-20}" bash "$SELF" __cql "$HOST" "$(<"$(port_file cassandra)")" "$@"
}

# Readiness: the node answers a query on system.local.
cql_probe() {
    CQL_TIMEOUT=10 cql "SELECT release_version FROM system.local"
}

cql_client() {
    local host=$1 port=$2
    shift 2
    exec 3<>"/dev/tcp/$host/$port"
    # OP, BODY: the last response frame (opcode and body in hex); POS: read offset in
    # BODY (hex digits); VAL: what the last take_* read. Globals, since $(...) would
    # run the readers in a subshell and lose POS.
    OP="" BODY="" POS=0 VAL="" STREAM=1
    cql_fail() { echo "cql: $*" >&2; exit 1; }
    hexstr() { printf '%s' "$1" | od -An -tx1 -v | tr -d ' \n'; }
    # shellcheck disable=SC2001 # every pair of hex digits becomes a \xHH escape
    unhex() { printf '%b' "$(sed 's/../\\x&/g' <<<"$1")"; }
    # Reads exactly $1 bytes from the server (dd with fullblock never reads past them).
    read_hex() { dd bs="$1" count=1 iflag=fullblock status=none <&3 | od -An -tx1 -v | tr -d ' \n'; }
    # Sends a request frame: version 04, flags 00, a fresh stream id, opcode $1, body hex $2.
    send() {
        unhex "$(printf '0400%04x%s%08x%s' "$STREAM" "$1" $((${#2} / 2)) "$2")" >&3
        STREAM=$((STREAM + 1))
    }
    recv() {
        local head len
        head=$(read_hex 9)
        [ ${#head} -eq 18 ] || cql_fail "connection closed (header '$head')"
        OP=${head:8:2}
        len=$((16#${head:10:8}))
        BODY=""
        [ "$len" -gt 0 ] && BODY=$(read_hex "$len")
        [ ${#BODY} -eq $((len * 2)) ] || cql_fail "short frame body"
        POS=0
        if [ "$OP" = 00 ]; then # ERROR: [int] code, [string] message
            take_int
            take_string
            cql_fail "server error: $VAL"
        fi
    }
    take_int() {
        VAL=$((16#${BODY:POS:8}))
        POS=$((POS + 8))
        [ "$VAL" -ge 2147483648 ] && VAL=$((VAL - 4294967296))
        return 0
    }
    take_short() { VAL=$((16#${BODY:POS:4})); POS=$((POS + 4)); }
    take_hex() { VAL=${BODY:POS:$(($1 * 2))}; POS=$((POS + $1 * 2)); }
    take_string() { take_short; take_hex "$VAL"; VAL=$(unhex "$VAL"); }
    # Skips a column type [option]: collections nest; UDTs and tuples aren't needed here.
    skip_type() {
        take_short
        case $VAL in
            0) take_string ;;
            32 | 34) skip_type ;;
            33) skip_type; skip_type ;;
            48 | 49) cql_fail "UDT and tuple columns are beyond this tiny client" ;;
        esac
    }

    send 05 ""
    recv
    [ "$OP" = 06 ] || cql_fail "OPTIONS answered with opcode $OP, not SUPPORTED (06)"
    # STARTUP {CQL_VERSION: 3.0.0}: a [string map] of one entry.
    send 01 "0001000b$(hexstr CQL_VERSION)0005$(hexstr 3.0.0)"
    recv
    [ "$OP" = 02 ] || cql_fail "STARTUP answered with opcode $OP, not READY (02; is authentication on?)"
    local q qhex flags ncols nrows r c i line
    for q in "$@"; do
        qhex=$(hexstr "$q")
        # QUERY: [long string] statement, consistency ONE (0001), no flags (00).
        send 07 "$(printf '%08x' $((${#qhex} / 2)))${qhex}000100"
        recv
        [ "$OP" = 08 ] || cql_fail "QUERY answered with opcode $OP, not RESULT (08)"
        take_int
        [ "$VAL" -eq 2 ] || continue # Void, Set_keyspace, Schema_change: nothing to print
        take_int; flags=$VAL
        take_int; ncols=$VAL
        if [ $((flags & 2)) -ne 0 ]; then take_int; take_hex "$VAL"; fi # paging state
        if [ $((flags & 4)) -eq 0 ]; then # column specs, unless no_metadata
            [ $((flags & 1)) -ne 0 ] && { take_string; take_string; } # global keyspace, table
            for ((i = 0; i < ncols; i++)); do
                [ $((flags & 1)) -eq 0 ] && { take_string; take_string; }
                take_string # column name
                skip_type
            done
        fi
        take_int; nrows=$VAL
        for ((r = 0; r < nrows; r++)); do
            line=""
            for ((c = 0; c < ncols; c++)); do
                [ "$c" -gt 0 ] && line+=$'\t'
                take_int
                if [ "$VAL" -lt 0 ]; then
                    line+="null"
                else
                    take_hex "$VAL"
                    line+=$(unhex "$VAL" | tr -c '[:print:]' '?')
                fi
            done
            printf '%s\n' "$line"
        done
    done
    exec 3>&-
}

# nodetool, through the JMX port the running node was started with.
cassandra_nodetool() {
    local d="$SVC/cassandra" jmx
    jmx=$(cat "$d/jmx_port" 2>/dev/null || echo 0)
    [ "$jmx" != 0 ] || die "cassandra runs without JMX: restart it with CONFAB_CASSANDRA_JMX_PORT=7199 (down cassandra; up cassandra)"
    find_java
    "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 \
        --add-exports java.base/jdk.internal.misc=ALL-UNNAMED \
        --add-exports java.base/jdk.internal.ref=ALL-UNNAMED \
        --add-opens java.base/java.lang=ALL-UNNAMED --add-opens java.base/java.nio=ALL-UNNAMED \
        --add-opens java.base/jdk.internal.ref=ALL-UNNAMED --add-opens java.base/sun.nio.ch=ALL-UNNAMED \
        "-Dlogback.configurationFile=file://$d/conf/logback-tools.xml" \
        "-Dcassandra.logdir=$d/logs" "-Duser.home=$d/tmp" \
        -cp "$SVC/jars/cassandra-$CASSANDRA_VERSION/*" org.apache.cassandra.tools.NodeTool \
        -h "$HOST" -p "$jmx" "$@"
}

cassandra_check() {
    local v ks="confab_services_check" got
    v=$(cql_probe) || die "cassandra: CQL query of system.local failed"
    [ -n "$v" ] || die "cassandra: system.local returned no release_version"
    got=$(cql "DROP KEYSPACE IF EXISTS $ks" \
        "CREATE KEYSPACE $ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}" \
        "CREATE TABLE $ks.kv (k text PRIMARY KEY, v text)" \
        "INSERT INTO $ks.kv (k, v) VALUES ('greeting', 'hello')" \
        "SELECT k, v FROM $ks.kv WHERE k = 'greeting'" \
        "DROP KEYSPACE $ks") || die "cassandra: CQL round trip failed"
    [ "$got" = $'greeting\thello' ] || die "cassandra: read back '$got', expected 'greeting<TAB>hello'"
    log "cassandra check ok: CQL v4 on $HOST:$(<"$(port_file cassandra)") (release_version $v): created a keyspace and table, wrote and read a row, dropped it"
}

# ---------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------

kafka_jars() { printf '%s/jars/kafka-%s' "$SVC" "$KAFKA_VERSION"; }

kafka_fetch() {
    # kafka_2.13 is the broker (kafka.Kafka, kafka.tools.StorageTool); kafka-tools has
    # TopicCommand and the console clients; log4j-slf4j-impl routes Kafka's SLF4J logging
    # to log4j2, as the distribution's libs/ does.
    fetch_jars "kafka-$KAFKA_VERSION" \
        "org.apache.kafka:kafka_2.13:$KAFKA_VERSION" \
        "org.apache.kafka:kafka-tools:$KAFKA_VERSION" \
        "org.apache.logging.log4j:log4j-slf4j-impl:$KAFKA_LOG4J_VERSION"
}

kafka_prepare() {
    find_java
    kafka_fetch
    local d="$SVC/kafka"
    mkdir -p "$d/conf" "$d/logs" "$d/data" "$d/tmp"
    # KRaft combined mode with a static one-voter quorum: the controller endpoint is not
    # written into the formatted log (unlike --standalone), so ports can change later.
    cat >"$d/conf/server.properties" <<EOF
# Generated by scripts/services/services.sh on each start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$d/data
num.partitions=4
auto.create.topics.enable=true
# One broker: every internal topic has one replica, and few partitions so that the first
# consumer group or transaction doesn't wait for 50 partitions to be created.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests' consumer groups should start consuming at once.
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
    # log4j2 (Kafka 4 no longer reads log4j 1 configs): the broker logs to logs/server.log.
    cat >"$d/conf/log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/services/services.sh. -->
<Configuration status="warn">
  <Appenders>
    <RollingFile name="server" fileName="$d/logs/server.log" filePattern="$d/logs/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="20 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="info"><AppenderRef ref="server"/></Root>
  </Loggers>
</Configuration>
EOF
    # Command-line tools: warnings only, on stderr.
    cat >"$d/conf/tools-log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders><Console name="err" target="SYSTEM_ERR"><PatternLayout pattern="%p %m%n"/></Console></Appenders>
  <Loggers><Root level="warn"><AppenderRef ref="err"/></Root></Loggers>
</Configuration>
EOF
    # Format the log dir once, with a cluster id generated here and kept, so restarts find
    # the same cluster. A Kafka Uuid is 16 random bytes in URL-safe base64 without padding.
    if [ ! -s "$d/cluster.id" ] && [ -f "$d/data/meta.properties" ]; then
        # Lost the id but kept the data: the data's own id is the one that works.
        sed -n 's/^cluster\.id=//p' "$d/data/meta.properties" | tr -d '\n' >"$d/cluster.id"
    fi
    if [ ! -s "$d/cluster.id" ]; then
        head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$d/cluster.id"
    fi
    if [ ! -f "$d/data/meta.properties" ]; then
        log "formatting Kafka storage (cluster id $(<"$d/cluster.id"))"
        if ! kafka_tool kafka.tools.StorageTool format -t "$(<"$d/cluster.id")" \
            -c "$d/conf/server.properties" --ignore-formatted >"$d/logs/format.log" 2>&1; then
            cat "$d/logs/format.log" >&2
            die "kafka storage format failed"
        fi
    fi
}

# Runs a Kafka command-line class with a small heap and a quick-starting JIT.
kafka_tool() {
    find_java
    "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        "-Dlog4j2.configurationFile=$SVC/kafka/conf/tools-log4j2.xml" \
        -cp "$(kafka_jars)/*" "$@"
}

kafka_start() {
    local d="$SVC/kafka"
    require_free_ports kafka "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
    printf '%s\n' "$KAFKA_PORT" >"$(port_file kafka)"
    [ -f "$d/logs/server.log" ] && mv "$d/logs/server.log" "$d/logs/server.log.prev"
    # bin/kafka-run-class.sh's server JVM options, with a small heap.
    local opts=(
        -Xms256m "-Xmx$KAFKA_HEAP" -XX:+ExitOnOutOfMemoryError
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
        -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$d/conf/log4j2.xml" "-Dkafka.logs.dir=$d/logs"
        "-Djava.io.tmpdir=$d/tmp"
    )
    fast_start_opts kafka "$KAFKA_VERSION"
    local extra=()
    read -r -a extra <<<"${CONFAB_KAFKA_JVM_OPTS:-}"
    opts+=("${extra[@]}")
    launch kafka "$d/logs/stdout.log" \
        "$JAVA" "${opts[@]}" -cp "$(kafka_jars)/*" kafka.Kafka "$d/conf/server.properties"
}

kafka_ready() {
    grep -qE 'Kafka Server started|started \(kafka.server.KafkaRaftServer\)' \
        "$SVC/kafka/logs/server.log" 2>/dev/null || return 1
    port_open "$(<"$(port_file kafka)")"
}

kafka_logs() { echo "$SVC/kafka/logs/server.log" "$SVC/kafka/logs/stdout.log"; }

kafka_check() {
    local broker topic msg got
    broker="$HOST:$(<"$(port_file kafka)")"
    topic="confab-services-check-$$"
    msg="hello-$$-$(date +%s)"
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$broker" \
        --create --topic "$topic" --partitions 1 --replication-factor 1 >/dev/null ||
        die "kafka: topic create failed"
    printf '%s\n' "$msg" | kafka_tool org.apache.kafka.tools.ConsoleProducer \
        --bootstrap-server "$broker" --topic "$topic" ||
        die "kafka: produce failed"
    got=$(kafka_tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$broker" \
        --topic "$topic" --from-beginning --max-messages 1 --timeout-ms 30000 2>/dev/null) || true
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$broker" \
        --delete --topic "$topic" >/dev/null || true
    [ "$got" = "$msg" ] || die "kafka: consumed '$got', expected '$msg'"
    log "kafka check ok: created $topic, produced and consumed one record on $broker"
}

# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------

services_of() {
    case "${1:-all}" in
        all) echo "${ALL_SERVICES[@]}" ;;
        redis | cassandra | kafka) echo "$1" ;;
        *) die "unknown service '$1' (redis, cassandra, kafka or all)" ;;
    esac
}

configured_port() {
    case $1 in
        redis) echo "$REDIS_PORT" ;;
        cassandra) echo "$CASSANDRA_PORT" ;;
        kafka) echo "$KAFKA_PORT" ;;
    esac
}

# Runs the Maven fetches of several services side by side (a cold machine spends most of
# its first `up` there). Best effort: Maven's local repository isn't made for concurrent
# writers, so a fetch that fails here is simply redone alone by <name>_prepare.
prefetch() {
    local name pids=() names=()
    [ "$#" -gt 1 ] || return 0
    for name in "$@"; do
        declare -F "${name}_fetch" >/dev/null || continue
        mkdir -p "$SVC/$name"
        ("${name}_fetch") 2>"$SVC/$name/prefetch.log" &
        pids+=("$!")
        names+=("$name")
    done
    local i
    for i in "${!pids[@]}"; do
        if wait "${pids[$i]}"; then
            cat "$SVC/${names[$i]}/prefetch.log" >&2
        else
            log "parallel fetch of ${names[$i]} failed; retrying it alone"
        fi
        rm -f "$SVC/${names[$i]}/prefetch.log"
    done
}

cmd_up() {
    local names name pid port todo=()
    read -r -a names <<<"$(services_of "${1:-all}")"
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
    prefetch "${todo[@]}"
    # Jars, configs and storage format first, so the launches below happen together.
    for name in "${todo[@]}"; do
        "${name}_prepare"
    done
    # Launched together and waited for together: the JVMs start side by side.
    for name in "${todo[@]}"; do
        "${name}_start"
        log "$name starting (pid $(<"$(pid_file "$name")"), port $(configured_port "$name"))"
    done
    [ ${#todo[@]} -eq 0 ] || wait_all_ready "${todo[@]}"
    write_endpoints
    log "endpoints ($SVC/endpoints.env):"
    sed -n 's/^CONFAB_/  CONFAB_/p' "$SVC/endpoints.env" >&2
}

# Ends the process in the pid file: SIGTERM (Cassandra drains, Kafka shuts down cleanly),
# then SIGKILL after STOP_TIMEOUT seconds; returns once the process is gone.
stop_one() {
    local name=$1 pid start killed=0
    if ! pid=$(running_pid "$name"); then
        log "$name not running"
        rm -f "$(pid_file "$name")"
        return 0
    fi
    log "stopping $name (pid $pid)"
    start=$(now_ms)
    local born deadline
    born=$(proc_start_time "$pid")
    deadline=$(($(now_ms) + STOP_TIMEOUT * 1000))
    kill -TERM "$pid" 2>/dev/null || true
    while ! proc_gone "$pid" "$born"; do
        if [ "$(now_ms)" -ge "$deadline" ]; then
            log "$name did not exit within ${STOP_TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            killed=1
            while ! proc_gone "$pid" "$born"; do sleep 0.1; done
            break
        fi
        sleep 0.1
    done
    rm -f "$(pid_file "$name")"
    # A class archive dumped at exit (see fast_start_opts) is kept only if the JVM ended
    # by itself; after SIGKILL it may be cut short.
    local partial
    for partial in "$SVC/$name"/*.jsa.partial; do
        [ -e "$partial" ] || continue
        if [ "$killed" = 0 ] && [ -s "$partial" ]; then
            mv -f "$partial" "${partial%.partial}"
        else
            rm -f "$partial"
        fi
    done
    log "$name stopped after $(since "$start")s"
}

cmd_down() {
    local names name pids=()
    read -r -a names <<<"$(services_of "${1:-all}")"
    # In parallel: Cassandra's drain and the JVMs' class-archive dumps take seconds each.
    for name in "${names[@]}"; do
        stop_one "$name" &
        pids+=("$!")
    done
    local rc=0 p
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    write_endpoints
    return "$rc"
}

cmd_status() {
    local name pid
    for name in "${ALL_SERVICES[@]}"; do
        if pid=$(running_pid "$name"); then
            printf '%-10s running  pid %-8s %s:%s\n' "$name" "$pid" "$HOST" "$(<"$(port_file "$name")")"
        elif [ -f "$(pid_file "$name")" ]; then
            printf '%-10s stopped  (stale pid file)\n' "$name"
        else
            printf '%-10s stopped\n' "$name"
        fi
    done
    printf 'data, logs, jars: %s\n' "$SVC"
}

cmd_check() {
    local names name
    read -r -a names <<<"$(services_of "${1:-all}")"
    for name in "${names[@]}"; do
        running_pid "$name" >/dev/null || die "$name is not running (run: $0 up $name)"
        "${name}_check"
    done
}

# `cql STATEMENT...`: runs statements on the running Cassandra with the tiny client above.
cmd_cql() {
    [ $# -gt 0 ] || die "usage: $0 cql 'STATEMENT' ['STATEMENT'...]"
    running_pid cassandra >/dev/null || die "cassandra is not running (run: $0 up cassandra)"
    cql "$@"
}

cmd_nodetool() {
    running_pid cassandra >/dev/null || die "cassandra is not running (run: $0 up cassandra)"
    cassandra_nodetool "$@"
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case $cmd in
        __cql) cql_client "$@"; return ;;
        up | down | check)
            # Validated here: services_of's own die would only end a $(...) subshell.
            case "${1:-all}" in
                all | redis | cassandra | kafka) ;;
                *) die "unknown service '$1' (redis, cassandra, kafka or all)" ;;
            esac
            ;;
        status | cql | nodetool) ;;
        *)
            sed -n '2,14s/^# \{0,1\}//p' "$SELF" >&2
            exit 2
            ;;
    esac
    mkdir -p "$SVC"
    # One up/down at a time per .services/ dir (tests may call `up` from several processes
    # at once): they'd race on ports and pid files. The servers are started with fd 9
    # closed, so they never hold the lock.
    if [ "$cmd" = up ] || [ "$cmd" = down ]; then
        exec 9>"$SVC/.lock"
        flock 9
    fi
    "cmd_$cmd" "$@"
}

main "$@"
