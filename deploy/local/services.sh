#!/usr/bin/env bash
# Install and run the real services the test suite talks to, on this machine,
# without Docker:
#   - PostgreSQL (Debian package, but our own cluster) on 127.0.0.1:54329
#   - Apache Kafka (jars from Maven Central, KRaft single node) on 127.0.0.1:19092
#   - MariaDB (Debian package, but our own instance) on 127.0.0.1:33069, for `connect sql`
#
#   - for the benchmark only: a second PostgreSQL cluster on 127.0.0.1:54330 with
#     production durability (fsync, synchronous_commit, full_page_writes on)
#
# Usage: services.sh up | up-bench | env | status | purge-test-data | down | reset
#   up      install what is missing, start what is not running, wait until all three
#           serve requests. Idempotent: a second run only checks and returns.
#   up-bench  the same for the benchmark: the durable PostgreSQL cluster and Kafka.
#   purge-test-data  delete the test topics and test databases (PostgreSQL and MariaDB) a
#           killed run left behind (test.sh runs it before the tests).
#   env     print `export ...` lines for the test suite (eval "$(services.sh env)"),
#           and for the benchmark (the durable cluster's URL, the Kafka jars).
#   status  say whether each service is up (exit 0 only if the test services are).
#   down    stop all (data is kept).
#   reset   stop all and delete their data (downloaded Kafka jars are kept).
#
# State (data, logs, pid files, jars) lives in ${LEADBRIDGE_SERVICES_DIR:-/var/lib/leadbridge-services}.
# See deploy/local/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${LEADBRIDGE_SERVICES_DIR:-/var/lib/leadbridge-services}

HOST=127.0.0.1
PG_PORT=54329
KAFKA_PORT=19092
KAFKA_CONTROLLER_PORT=19093

# Role the tests connect as. Superuser so tests can CREATE DATABASE / extensions.
PG_ROLE=leadbridge
PG_PASSWORD=leadbridge

PG_BENCH_PORT=54330

# MariaDB, for the SQL connector's tests: our own instance, never Debian's system service.
MARIA_PORT=33069
MARIA_USER=leadbridge
MARIA_PASSWORD=leadbridge
MARIA_DIR=$STATE/mariadb
MARIA_DATA=$MARIA_DIR/data
MARIA_RUN=$MARIA_DIR/run            # socket and the server's pid file: keeps us off /run/mysqld
MARIA_SOCKET=$MARIA_RUN/mariadb.sock
MARIA_PID=$MARIA_DIR/mariadbd.pid   # written by the launcher below, before the server starts
MARIA_LOG=$MARIA_DIR/mariadb.log
MARIA_OUT=$MARIA_DIR/mariadbd.out   # stdout/stderr of the server (crashes before logging starts)
MARIA_READY_TIMEOUT=${LEADBRIDGE_TEST_MARIADB_READY_TIMEOUT:-60}

# Which PostgreSQL cluster the pg_* functions below work on: "test" (durability off,
# for the test suite) or "bench" (production durability, for deploy/local/bench.sh).
pg_select() {
  PG_CLUSTER=$1
  case "$1" in
    test) PG_DIR=$STATE/postgres; PG_PORT=54329 ;;
    bench) PG_DIR=$STATE/postgres-bench; PG_PORT=$PG_BENCH_PORT ;;
  esac
  PG_DATA=$PG_DIR/data
  PG_RUN=$PG_DIR/run            # unix socket dir: keeps us off /var/run/postgresql
  PG_LOG=$PG_DIR/postgres.log
}
pg_select test

KAFKA_DIR=$STATE/kafka
KAFKA_LIBS=$KAFKA_DIR/libs
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_LOGS=$KAFKA_DIR/logs    # broker's own log4j output (server.log)
KAFKA_OUT=$KAFKA_DIR/kafka.out  # stdout/stderr of the JVM (crashes before logging starts)
KAFKA_PID=$KAFKA_DIR/kafka.pid
KAFKA_POM=$HERE/kafka/pom.xml
KAFKA_READY_TIMEOUT=${LEADBRIDGE_TEST_KAFKA_READY_TIMEOUT:-90}

# Broker JVM: small heap, this is a test box with 2 cores. Every test creates its own
# topics, kept until the data is reset; the broker's memory grows with their partitions
# (512m runs out at about 15,000), hence the override.
KAFKA_JVM_OPTS=(-Xms256m "-Xmx${LEADBRIDGE_TEST_KAFKA_HEAP:-512m}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
  -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
  "-Dkafka.logs.dir=$KAFKA_LOGS" "-Dlog4j2.configurationFile=$KAFKA_DIR/log4j2.properties")
# CLI tools (readiness probe, StorageTool): start fast, log only warnings to stderr.
KAFKA_TOOL_OPTS=(-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
  "-Dlog4j2.configurationFile=$KAFKA_DIR/tools-log4j2.properties")

log() { echo "[services] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Print the end of a log file to stderr (used whenever something fails to start).
show_tail() {
  local f
  for f in "$@"; do
    [ -s "$f" ] || continue
    echo "----- last lines of $f -----" >&2
    tail -n 40 "$f" >&2
    echo "-----" >&2
  done
}

# True if something accepts TCP connections on $HOST:$1 (bash built-in, no nc needed).
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Stop process $2 (service $1, for the messages): SIGTERM, then SIGKILL if it is still alive
# after 60 s.
stop_pid() {
  local name=$1 pid=$2
  log "$name: stopping (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: still alive after 60s, killing"
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

# ---------------------------------------------------------------- packages ---

APT_UPDATED=0
apt_install() {
  [ "$(id -u)" -eq 0 ] || die "need root to apt-get install $*"
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    apt-get update >>"$STATE/apt.log" 2>&1 || { show_tail "$STATE/apt.log"; die "apt-get update failed"; }
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$STATE/apt.log" 2>&1 \
    || { show_tail "$STATE/apt.log"; die "apt-get install $* failed"; }
}

java_major() {
  command -v java >/dev/null 2>&1 || { echo 0; return; }
  local v
  v=$(java -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -n1)
  echo "${v:-0}"
}

ensure_java_and_maven() {
  if [ "$(java_major)" -lt 17 ]; then
    apt_install openjdk-17-jre-headless
    # Debian may keep an older java as the default alternative; point at 17.
    [ "$(java_major)" -ge 17 ] || export PATH=/usr/lib/jvm/java-17-openjdk-amd64/bin:$PATH
  fi
  command -v mvn >/dev/null 2>&1 || apt_install maven
}

# Newest installed PostgreSQL bin dir, or the one matching an existing cluster
# (a data dir only runs with the major version that created it).
pg_bin() {
  if [ -s "$PG_DATA/PG_VERSION" ] && [ -x "/usr/lib/postgresql/$(cat "$PG_DATA/PG_VERSION")/bin/pg_ctl" ]; then
    echo "/usr/lib/postgresql/$(cat "$PG_DATA/PG_VERSION")/bin"
    return
  fi
  # shellcheck disable=SC2012  # names are plain version numbers
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1
}

ensure_postgres_installed() {
  local bin
  bin=$(pg_bin)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    # Debian's package also creates (and may start) its own "main" cluster on
    # port 5432; we leave that alone and run a separate cluster below.
    apt_install postgresql
  fi
  id -u postgres >/dev/null 2>&1 \
    || useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
}

# ---------------------------------------------------------------- postgres ---

# PostgreSQL refuses to run as root, so everything touching the cluster runs as
# the postgres OS user. cd / so it never complains about root's cwd.
as_pg() {
  if [ "$(id -un)" = postgres ]; then (cd / && "$@"); else (cd / && runuser -u postgres -- "$@"); fi
}

pg_running() {
  [ -s "$PG_DATA/PG_VERSION" ] && as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

pg_psql_admin() {
  # Superuser over the private unix socket (trust auth), for setup only; SQL on stdin.
  as_pg "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_RUN" -p "$PG_PORT" -U postgres -d postgres
}

pg_write_config() {
  # Settings for a throw-away test cluster: durability off (tests recreate
  # everything), many connections because each test opens its own pools.
  # The bench cluster keeps PostgreSQL's production defaults for durability.
  local want durability=off
  [ "$PG_CLUSTER" = bench ] && durability=on
  want=$(cat <<EOF
# Written by deploy/local/services.sh; edits are overwritten on the next "up".
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
max_connections = 300
shared_buffers = 128MB
fsync = $durability
synchronous_commit = $durability
full_page_writes = $durability
log_min_messages = warning
log_connections = off
EOF
)
  if [ "$(cat "$PG_DATA/leadbridge.conf" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" >"$PG_DATA/leadbridge.conf"
    chown postgres:postgres "$PG_DATA/leadbridge.conf"
    pg_running && log "postgres ($PG_CLUSTER): settings changed; run 'down' then 'up' to apply them"
  fi
  return 0
}

pg_up() {
  ensure_postgres_installed
  local bin
  mkdir -p "$PG_DIR" "$PG_RUN"
  chown postgres:postgres "$PG_DIR" "$PG_RUN"
  chmod 700 "$PG_DIR"
  as_pg test -w "$PG_DIR" \
    || die "user postgres cannot reach $PG_DIR: make $STATE and its parents traversable (chmod o+x) or set LEADBRIDGE_SERVICES_DIR elsewhere"

  if [ ! -s "$PG_DATA/PG_VERSION" ]; then
    rm -rf "$PG_DATA"   # leftovers of an interrupted initdb
    bin=$(pg_bin)
    log "postgres ($PG_CLUSTER): initdb $PG_DATA ($("$bin/postgres" --version))"
    # local socket: trust (setup runs as the postgres OS user);
    # TCP from 127.0.0.1: password (md5 in pg_hba; PG answers with SCRAM since
    # passwords are stored as SCRAM, which every client we use speaks).
    as_pg "$bin/initdb" -D "$PG_DATA" -U postgres -E UTF8 --no-locale \
      --auth-local=trust --auth-host=md5 >"$PG_DIR/initdb.log" 2>&1 \
      || { show_tail "$PG_DIR/initdb.log"; die "initdb failed"; }
    echo "include_if_exists = 'leadbridge.conf'" >>"$PG_DATA/postgresql.conf"
  fi
  bin=$(pg_bin)
  pg_write_config

  if pg_running; then
    log "postgres ($PG_CLUSTER): already running on $HOST:$PG_PORT"
  else
    port_open "$PG_PORT" && die "port $PG_PORT is taken by another process (not our cluster in $PG_DATA)"
    log "postgres ($PG_CLUSTER): starting on $HOST:$PG_PORT (log: $PG_LOG)"
    # 9>&- : do not hand our lock file descriptor to the long-lived server.
    # (pg_ctl's own messages go to a separate file: $PG_LOG must be created by
    # the server itself, as user postgres.)
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >"$PG_DIR/pg_ctl.out" 2>&1 9>&- \
      || { show_tail "$PG_DIR/pg_ctl.out" "$PG_LOG"; die "postgres failed to start"; }
  fi

  # Idempotent: create the test role once, and keep its password as documented.
  pg_psql_admin >/dev/null <<SQL || { show_tail "$PG_LOG"; die "could not create role $PG_ROLE"; }
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
    CREATE ROLE $PG_ROLE LOGIN SUPERUSER CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;
SQL
  log "postgres ($PG_CLUSTER): ready"
}

pg_down() {
  if pg_running; then
    log "postgres ($PG_CLUSTER): stopping"
    as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null \
      || { show_tail "$PG_LOG"; die "postgres failed to stop"; }
  else
    log "postgres ($PG_CLUSTER): not running"
  fi
}

# ------------------------------------------------------------------- kafka ---

kafka_pid() { cat "$KAFKA_PID" 2>/dev/null || true; }

# Our broker is running if the pid file names a live process that is a Kafka
# JVM (guards against a stale pid file whose number was reused).
kafka_running() {
  local pid
  pid=$(kafka_pid)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka'
}

ensure_kafka_libs() {
  # The jar set is keyed on the pom's checksum: editing the pom (e.g. another
  # Kafka version) re-copies; otherwise nothing is downloaded or copied.
  local want tmp
  want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  [ "$(cat "$KAFKA_LIBS/.pom.sha256" 2>/dev/null)" = "$want" ] && return 0
  log "kafka: fetching jars with Maven (cached in ~/.m2) into $KAFKA_LIBS"
  tmp=$KAFKA_LIBS.tmp
  rm -rf "$tmp"
  mvn -B -q -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
    -DoutputDirectory="$tmp" >"$KAFKA_DIR/maven.log" 2>&1 \
    || { show_tail "$KAFKA_DIR/maven.log"; die "maven could not fetch Kafka"; }
  echo "$want" >"$tmp/.pom.sha256"
  # Swap in whole so a failed/partial copy never mixes two versions on the classpath.
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
}

kafka_write_config() {
  cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by deploy/local/services.sh on every "up"; edit the script, not this.
# Single combined KRaft node (no ZooKeeper): broker and controller in one JVM.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$KAFKA_DATA

# One broker: every internal topic must live with replication factor 1.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
# Fewer __consumer_offsets partitions than the default 50: less work (and
# fewer files) when the first consumer group of a fresh broker creates it.
offsets.topic.num.partitions=5

# Test-friendly behaviour.
num.partitions=3
auto.create.topics.enable=true
delete.topic.enable=true
group.initial.rebalance.delay.ms=0

# Small machine.
num.network.threads=2
num.io.threads=4
log.retention.hours=24
EOF

  # Broker logging (log4j2, reached through slf4j -> log4j-slf4j-impl).
  cat >"$KAFKA_DIR/log4j2.properties" <<'EOF'
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
# Per-request logging is far too chatty for a test run.
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF

  cat >"$KAFKA_DIR/tools-log4j2.properties" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = err
EOF

  # Client settings for the readiness probe: fail each attempt fast instead of
  # the admin client's default 60 s of internal retries.
  cat >"$KAFKA_DIR/probe-client.properties" <<'EOF'
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
}

kafka_format_storage() {
  [ -f "$KAFKA_DATA/meta.properties" ] && return 0
  local cluster_id
  log "kafka: formatting storage in $KAFKA_DATA"
  rm -rf "$KAFKA_DATA"
  cluster_id=$(java "${KAFKA_TOOL_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>>"$KAFKA_DIR/format.log") \
    || { show_tail "$KAFKA_DIR/format.log"; die "kafka: could not generate a cluster id"; }
  # Static quorum (controller.quorum.voters), so no --standalone here.
  java "${KAFKA_TOOL_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format \
    -t "$cluster_id" -c "$KAFKA_DIR/server.properties" >>"$KAFKA_DIR/format.log" 2>&1 \
    || { show_tail "$KAFKA_DIR/format.log"; die "kafka: storage format failed"; }
}

# Ready = the broker answers a real admin request (list topics), not just an
# open port. The cheap port check first avoids starting a probe JVM (which
# competes with the booting broker for 2 cores) before there is any point.
kafka_probe() {
  port_open "$KAFKA_PORT" || return 1
  timeout 30 java "${KAFKA_TOOL_OPTS[@]}" -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$HOST:$KAFKA_PORT" --command-config "$KAFKA_DIR/probe-client.properties" \
    --list >/dev/null 2>>"$KAFKA_DIR/probe.log"
}

# Test topics are named t<32 hex>.… (tests) and bench<32 hex>.… (benchmarks). Tests delete
# their own when they stop; a run that was killed leaves its topics behind, and thousands of
# leftover partitions make the broker slow to start and can exhaust its heap.
TEST_TOPICS='(t|bench)[0-9a-f]{32}[.].*'
kafka_purge_test_topics() {
  local count
  count=$(timeout 60 java "${KAFKA_TOOL_OPTS[@]}" -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$HOST:$KAFKA_PORT" --command-config "$KAFKA_DIR/probe-client.properties" \
    --list 2>>"$KAFKA_DIR/probe.log" | grep -cE "^$TEST_TOPICS\$" || true)
  if [ "${count:-0}" -gt 0 ]; then
    log "kafka: deleting $count leftover test topics"
    timeout 120 java "${KAFKA_TOOL_OPTS[@]}" -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
      --bootstrap-server "$HOST:$KAFKA_PORT" --command-config "$KAFKA_DIR/probe-client.properties" \
      --delete --topic "$TEST_TOPICS" >>"$KAFKA_DIR/probe.log" 2>&1 \
      || log "kafka: could not delete the leftover test topics (see $KAFKA_DIR/probe.log)"
  fi
}

# Test databases are lb_test_<32 hex> (see tests/it/helpers.rs); tests drop their own when they
# stop, and this drops what a killed run left (each is a few MB; thousands fill a disk).
pg_purge_test_databases() {
  local count
  count=$(as_pg "$(pg_bin)/psql" -X -At -h "$PG_RUN" -p "$PG_PORT" -U postgres -d postgres \
    -c "SELECT count(*) FROM pg_database WHERE datname LIKE 'lb\_test\_%'" 2>/dev/null || echo 0)
  if [ "${count:-0}" -gt 0 ]; then
    log "postgres: dropping $count leftover test databases"
    pg_psql_admin >/dev/null <<'SQL' || log "postgres: could not drop every leftover test database"
SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', datname)
FROM pg_database WHERE datname LIKE 'lb\_test\_%' \gexec
SQL
  fi
}

kafka_wait_ready() {
  local start=$SECONDS deadline=$((SECONDS + KAFKA_READY_TIMEOUT))
  log "kafka: waiting for the broker to serve requests (up to ${KAFKA_READY_TIMEOUT}s)"
  until kafka_probe; do
    # Only "alive" here: right after start the pid may still be the wrapper shell that is
    # about to exec java, so its command line does not name kafka.Kafka yet.
    if ! kill -0 "$(kafka_pid)" 2>/dev/null; then
      show_tail "$KAFKA_OUT" "$KAFKA_LOGS/server.log"
      die "kafka: broker exited during startup"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      show_tail "$KAFKA_OUT" "$KAFKA_LOGS/server.log" "$KAFKA_DIR/probe.log"
      die "kafka: broker not ready after ${KAFKA_READY_TIMEOUT}s (still running as pid $(kafka_pid); see logs above)"
    fi
    sleep 1
  done
  log "kafka: ready (waited $((SECONDS - start))s)"
}

kafka_up() {
  if kafka_running && port_open "$KAFKA_PORT"; then
    log "kafka: already running on $HOST:$KAFKA_PORT (pid $(kafka_pid))"
    return 0
  fi
  if kafka_running; then
    # Started but not listening yet (e.g. an "up" that was interrupted): wait for it.
    kafka_wait_ready
    return 0
  fi
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    port_open "$p" && die "port $p is taken by another process (not our broker; pid file $KAFKA_PID)"
  done

  ensure_java_and_maven
  mkdir -p "$KAFKA_DIR" "$KAFKA_LOGS"
  ensure_kafka_libs
  kafka_write_config
  kafka_format_storage

  log "kafka: starting on $HOST:$KAFKA_PORT (logs: $KAFKA_LOGS/server.log, $KAFKA_OUT)"
  : >"$KAFKA_DIR/probe.log"
  # A broker that was killed leaves its pid file behind; the wait below must see the new
  # broker's pid, not mistake the dead one's for a broker that exited during start-up.
  rm -f "$KAFKA_PID"
  # setsid: own session, so the broker outlives this shell and its terminal.
  # The inner bash writes its own pid and then exec's java, so the pid file
  # holds the JVM's pid whatever setsid/nohup do about forking.
  # 9>&- : do not hand our lock file descriptor to the long-lived broker.
  (
    cd "$KAFKA_DIR"
    # shellcheck disable=SC2016  # $$ and $@ are for the inner bash
    nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PID" \
      java "${KAFKA_JVM_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
      >"$KAFKA_OUT" 2>&1 </dev/null 9>&- &
  )
  # Wait (briefly) for the pid file the child writes.
  for _ in $(seq 50); do [ -s "$KAFKA_PID" ] && break; sleep 0.1; done
  kafka_wait_ready
}

kafka_down() {
  if ! kafka_running; then
    log "kafka: not running"
    rm -f "$KAFKA_PID"
    return 0
  fi
  # Controlled shutdown of a combined node takes a few seconds.
  stop_pid kafka "$(kafka_pid)"
  rm -f "$KAFKA_PID"
}

# ----------------------------------------------------------------- mariadb ---

# Server and tools: Debian 12 names them mariadbd / mariadb-install-db / mariadb-admin /
# mariadb, older packages only mysqld / mysql_install_db / mysqladmin / mysql.
maria_tool() {
  local name
  for name in "$@"; do
    for dir in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
      [ -x "$dir/$name" ] && { echo "$dir/$name"; return 0; }
    done
  done
  return 1
}
maria_server() { maria_tool mariadbd mysqld; }

ensure_mariadb_installed() {
  if ! maria_server >/dev/null || ! maria_tool mariadb-install-db mysql_install_db >/dev/null; then
    # The package's maintainer scripts would start the system service on port 3306; keep
    # them from it (101 = "action forbidden by policy") unless the machine already says so.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod 755 "$policy"
      made_policy=1
      # Removed however the install ends: a policy left behind would block every service.
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt_install mariadb-server
    if [ "$made_policy" -eq 1 ]; then
      rm -f "$policy"
      trap - EXIT
    fi
    # Under systemd the package enables its service for the next boot: ours is the only one.
    if [ -d /run/systemd/system ]; then
      systemctl disable --now mariadb >/dev/null 2>&1 || true
    fi
    maria_server >/dev/null || die "mariadb-server installed, but no mariadbd or mysqld found"
  fi
  id -u mysql >/dev/null 2>&1 \
    || useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin mysql
}

maria_pid() { cat "$MARIA_PID" 2>/dev/null || true; }

# Our server is running if the pid file names a live mariadbd/mysqld on our data dir
# (guards against a stale pid file whose number was reused).
maria_running() {
  local pid
  pid=$(maria_pid)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--datadir=$MARIA_DATA"
}

# Root over the private socket (unix_socket authentication as the OS root), for setup only.
maria_admin_sql() {
  "$(maria_tool mariadb mysql)" --no-defaults --protocol=socket --socket="$MARIA_SOCKET" -uroot "$@"
}

maria_probe() {
  port_open "$MARIA_PORT" \
    && "$(maria_tool mariadb-admin mysqladmin)" --no-defaults --protocol=socket --socket="$MARIA_SOCKET" \
      -uroot --connect-timeout=5 ping >/dev/null 2>&1
}

maria_wait_ready() {
  local start=$SECONDS deadline=$((SECONDS + MARIA_READY_TIMEOUT))
  until maria_probe; do
    if ! kill -0 "$(maria_pid)" 2>/dev/null; then
      show_tail "$MARIA_OUT" "$MARIA_LOG"
      die "mariadb: server exited during startup"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      show_tail "$MARIA_OUT" "$MARIA_LOG"
      die "mariadb: not ready after ${MARIA_READY_TIMEOUT}s"
    fi
    sleep 0.5
  done
  log "mariadb: ready (waited $((SECONDS - start))s)"
}

maria_up() {
  ensure_mariadb_installed
  mkdir -p "$MARIA_DIR" "$MARIA_RUN"
  chown mysql:mysql "$MARIA_DIR" "$MARIA_RUN"
  chmod 750 "$MARIA_DIR"
  if [ ! -d "$MARIA_DATA/mysql" ]; then
    rm -rf "$MARIA_DATA"   # leftovers of an interrupted install-db
    log "mariadb: mariadb-install-db $MARIA_DATA ($("$(maria_server)" --version))"
    "$(maria_tool mariadb-install-db mysql_install_db)" --no-defaults --datadir="$MARIA_DATA" \
      --user=mysql --auth-root-authentication-method=socket --skip-test-db \
      >"$MARIA_DIR/install-db.log" 2>&1 \
      || { show_tail "$MARIA_DIR/install-db.log"; die "mariadb-install-db failed"; }
  fi

  if maria_running && port_open "$MARIA_PORT"; then
    log "mariadb: already running on $HOST:$MARIA_PORT (pid $(maria_pid))"
  elif maria_running; then
    maria_wait_ready
  else
    port_open "$MARIA_PORT" && die "port $MARIA_PORT is taken by another process (not our server; pid file $MARIA_PID)"
    log "mariadb: starting on $HOST:$MARIA_PORT (log: $MARIA_LOG)"
    rm -f "$MARIA_PID"
    # Throw-away test data: no binary log, no flush per commit. setsid: own session, so the
    # server outlives this shell. 9>&- : do not hand our lock to the long-lived server.
    # The inner bash writes its own pid and then exec's the server, so the pid file holds the
    # server's pid from the first moment (the server's own pid file comes only once it runs).
    (
      cd /
      # shellcheck disable=SC2016  # $$ and $@ are for the inner bash
      nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$MARIA_PID" \
        "$(maria_server)" --no-defaults --user=mysql \
        --datadir="$MARIA_DATA" --socket="$MARIA_SOCKET" --pid-file="$MARIA_RUN/mariadbd.pid" \
        --bind-address="$HOST" --port="$MARIA_PORT" --log-error="$MARIA_LOG" \
        --skip-name-resolve --skip-log-bin --max-connections=300 \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
        --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=0 --sync-binlog=0 \
        >"$MARIA_OUT" 2>&1 </dev/null 9>&- &
    )
    for _ in $(seq 50); do [ -s "$MARIA_PID" ] && break; sleep 0.1; done
    maria_wait_ready
  fi

  # Idempotent: the test user, with every privilege (tests create their own databases).
  maria_admin_sql >/dev/null <<SQL || { show_tail "$MARIA_LOG"; die "could not create user $MARIA_USER"; }
CREATE USER IF NOT EXISTS '$MARIA_USER'@'%' IDENTIFIED BY '$MARIA_PASSWORD';
ALTER USER '$MARIA_USER'@'%' IDENTIFIED BY '$MARIA_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$MARIA_USER'@'%' WITH GRANT OPTION;
SQL
  log "mariadb: ready"
}

maria_down() {
  if ! maria_running; then
    log "mariadb: not running"
    return 0
  fi
  stop_pid mariadb "$(maria_pid)"
  rm -f "$MARIA_PID"
}

# Test databases are lb_test_<32 hex> here too (see tests/it/connect_sql.rs).
maria_purge_test_databases() {
  local names
  names=$(maria_admin_sql -N -B -e \
    "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'lb\\_test\\_%'" 2>/dev/null || true)
  [ -n "$names" ] || return 0
  log "mariadb: dropping $(echo "$names" | wc -l) leftover test databases"
  for name in $names; do
    maria_admin_sql -e "DROP DATABASE IF EXISTS \`$name\`" \
      || log "mariadb: could not drop $name"
  done
}

maria_reset() {
  maria_down
  log "deleting $MARIA_DIR"
  rm -rf "$MARIA_DIR"
}

# -------------------------------------------------------------------- main ---

# Serialise up/down/reset (two "up"s racing would start two brokers).
take_lock() {
  # 0755 on a dir we create: the postgres OS user must be able to pass through it.
  [ -d "$STATE" ] || { mkdir -p "$STATE"; chmod 0755 "$STATE"; }
  exec 9>"$STATE/.lock"
  flock 9
}

cmd=${1:-}
case "$cmd" in
  up)
    take_lock
    pg_up
    kafka_up
    maria_up
    ;;
  up-bench)
    take_lock
    pg_select bench
    pg_up
    kafka_up
    ;;
  purge-test-data)
    take_lock
    kafka_running && port_open "$KAFKA_PORT" || die "kafka is not running"
    pg_running && port_open "$PG_PORT" || die "postgres is not running"
    maria_running && port_open "$MARIA_PORT" || die "mariadb is not running"
    kafka_purge_test_topics
    pg_purge_test_databases
    maria_purge_test_databases
    ;;
  env)
    echo "export LEADBRIDGE_TEST_DATABASE_URL=postgres://$PG_ROLE:$PG_PASSWORD@$HOST:$PG_PORT/postgres"
    echo "export LEADBRIDGE_TEST_KAFKA=$HOST:$KAFKA_PORT"
    echo "export LEADBRIDGE_TEST_MARIADB_URL=mysql://$MARIA_USER:$MARIA_PASSWORD@$HOST:$MARIA_PORT"
    echo "export LEADBRIDGE_TEST_BENCH_DATABASE_URL=postgres://$PG_ROLE:$PG_PASSWORD@$HOST:$PG_BENCH_PORT/postgres"
    echo "export LEADBRIDGE_TEST_KAFKA_LIBS=$KAFKA_LIBS"
    echo "export LEADBRIDGE_TEST_KAFKA_TOOLS_LOG4J=$KAFKA_DIR/tools-log4j2.properties"
    ;;
  status)
    rc=0
    if pg_running && port_open "$PG_PORT"; then echo "postgres: up ($HOST:$PG_PORT, data $PG_DATA)"
    else echo "postgres: down"; rc=1; fi
    if kafka_running && port_open "$KAFKA_PORT"; then echo "kafka: up ($HOST:$KAFKA_PORT, pid $(kafka_pid))"
    else echo "kafka: down"; rc=1; fi
    if maria_running && port_open "$MARIA_PORT"; then echo "mariadb: up ($HOST:$MARIA_PORT, pid $(maria_pid), data $MARIA_DATA)"
    else echo "mariadb: down"; rc=1; fi
    pg_select bench
    if pg_running && port_open "$PG_PORT"; then echo "postgres (bench, durable): up ($HOST:$PG_PORT, data $PG_DATA)"
    else echo "postgres (bench, durable): down (started by up-bench only)"; fi
    exit "$rc"
    ;;
  down)
    [ -d "$STATE" ] || { log "nothing to stop: $STATE does not exist"; exit 0; }
    take_lock
    maria_down
    kafka_down
    pg_down
    pg_select bench
    pg_down
    ;;
  reset)
    if [ -d "$STATE" ]; then
      take_lock
      maria_reset
      kafka_down
      pg_down
      pg_select bench
      pg_down
      log "deleting $STATE/postgres, $PG_DIR, $KAFKA_DATA and $KAFKA_LOGS (Kafka jars in $KAFKA_LIBS are kept)"
      rm -rf "$STATE/postgres" "$PG_DIR" "$KAFKA_DATA" "$KAFKA_LOGS"
    fi
    ;;
  *)
    echo "usage: $0 up|up-bench|env|status|purge-test-data|down|reset" >&2
    exit 2
    ;;
esac
