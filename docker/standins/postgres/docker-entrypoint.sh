#!/usr/bin/env bash
# Entrypoint of the postgres:16 stand-in (docker/standins/build.sh). It honours the official
# image's variables that docker-compose.yaml uses:
#   POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE  the superuser's password (needed on first start)
#   POSTGRES_USER          the superuser (default postgres)
#   POSTGRES_DB            a database made on first start (default: the superuser's name)
#   POSTGRES_INITDB_ARGS   more initdb arguments
#   PGDATA                 the data folder
# On first start (no PG_VERSION in PGDATA) it runs initdb, admits every host with a password
# (scram-sha-256), listens on all addresses and makes POSTGRES_DB. It runs the server as the
# postgres user; as root it first reads the password file and gives PGDATA to that user.
set -euo pipefail

if [[ "${1:-}" == -* ]]; then
  set -- postgres "$@"
fi
if [[ "${1:-}" != postgres ]]; then
  exec "$@"
fi

if [[ -n "${POSTGRES_PASSWORD_FILE:-}" ]]; then
  POSTGRES_PASSWORD="$(<"${POSTGRES_PASSWORD_FILE}")"
  export POSTGRES_PASSWORD
  unset POSTGRES_PASSWORD_FILE
fi

if [[ "$(id -u)" == 0 ]]; then
  mkdir -p "${PGDATA}"
  chown postgres:postgres "${PGDATA}"
  chmod 700 "${PGDATA}"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [[ ! -s "${PGDATA}/PG_VERSION" ]]; then
  if [[ -z "${POSTGRES_PASSWORD:-}" ]]; then
    echo "postgres: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE for the first start" >&2
    exit 1
  fi
  superuser="${POSTGRES_USER:-postgres}"
  database="${POSTGRES_DB:-${superuser}}"
  password_file="$(mktemp)"
  printf '%s' "${POSTGRES_PASSWORD}" >"${password_file}"
  # shellcheck disable=SC2086 # the extra arguments are split on purpose
  initdb --pgdata="${PGDATA}" --username="${superuser}" --pwfile="${password_file}" \
    --auth-local=trust --auth-host=scram-sha-256 ${POSTGRES_INITDB_ARGS:-}
  rm -f "${password_file}"
  echo "host all all all scram-sha-256" >>"${PGDATA}/pg_hba.conf"
  echo "listen_addresses = '*'" >>"${PGDATA}/postgresql.conf"
  if [[ "${database}" != postgres ]]; then
    # A server on its socket only, for the one statement.
    pg_ctl --pgdata="${PGDATA}" --wait --silent --options="-c listen_addresses=''" start
    psql --username="${superuser}" --dbname=postgres --quiet --set=ON_ERROR_STOP=1 \
      --set=database="${database}" <<<'create database :"database"'
    pg_ctl --pgdata="${PGDATA}" --wait --silent --mode=fast stop
  fi
fi
unset POSTGRES_PASSWORD
exec "$@"
