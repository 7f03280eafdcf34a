# Sourced by .ci/run (and usable by hand: `source .ci/postgres.sh && start_test_postgres`): a throwaway
# PostgreSQL server for the tests that share a study database between processes, as several machines would.
#
# Installs Debian's PostgreSQL when it is missing, initialises a cluster in a temporary folder, starts it on a free
# port of 127.0.0.1 (as the `postgres` user when run as root: the server refuses to run as root) and stops and
# deletes it when the shell exits. Exports what the tests read:
#   AUTOML_TEST_POSTGRES_URL  postgresql://automl:PASSWORD@127.0.0.1:PORT/automl (a superuser, so tests can make
#                             a database each; with a password, so tests can check that it is never shown)
#   AUTOML_TEST_POSTGRES_CTL  pg_ctl for this cluster: the fault tests stop and start the server with it

start_test_postgres() {
  local started=$SECONDS bin owner password port
  bin=$(_postgres_bin)
  if [ -z "$bin" ]; then
    echo "postgres.sh: installing PostgreSQL from Debian's packages" >&2
    # The package would create and start a default cluster; the tests only need the programs.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/automl-ci.conf
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    bin=$(_postgres_bin)
    [ -n "$bin" ] || { echo "postgres.sh: PostgreSQL did not install" >&2; return 1; }
  fi
  owner=()
  if [ "$(id -u)" = 0 ]; then owner=(runuser -u postgres --); fi

  TEST_POSTGRES_DIR=$(mktemp -d /tmp/automl-postgres.XXXXXX)
  password="ci-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf '%s\n' "$password" >"$TEST_POSTGRES_DIR/password"
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$TEST_POSTGRES_DIR"; fi
  "${owner[@]}" "$bin/initdb" -D "$TEST_POSTGRES_DIR/data" -U automl --pwfile="$TEST_POSTGRES_DIR/password" \
    --auth=scram-sha-256 --encoding=UTF8 --no-sync >"$TEST_POSTGRES_DIR/initdb.log"
  # Settings in the file, not on pg_ctl's command line, so a plain `pg_ctl start` after a stop restores them.
  # Durability is not tested here, so no fsync: faster on a busy CI machine.
  cat >>"$TEST_POSTGRES_DIR/data/postgresql.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TEST_POSTGRES_DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  TEST_POSTGRES_CTL="${owner[*]} $bin/pg_ctl -D $TEST_POSTGRES_DIR/data -l $TEST_POSTGRES_DIR/server.log -w -t 60"
  trap stop_test_postgres EXIT
  $TEST_POSTGRES_CTL start >/dev/null
  PGPASSWORD=$password "$bin/createdb" -h 127.0.0.1 -p "$port" -U automl automl
  export AUTOML_TEST_POSTGRES_URL="postgresql://automl:$password@127.0.0.1:$port/automl"
  export AUTOML_TEST_POSTGRES_CTL="$TEST_POSTGRES_CTL"
  echo "postgres.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port," \
    "ready in $((SECONDS - started)) s" >&2
}

stop_test_postgres() {
  if [ -n "${TEST_POSTGRES_DIR:-}" ] && [ -d "$TEST_POSTGRES_DIR" ]; then
    $TEST_POSTGRES_CTL -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$TEST_POSTGRES_DIR"
  fi
}

_postgres_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true  # none yet: empty, not an error
}
