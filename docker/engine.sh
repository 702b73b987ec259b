#!/usr/bin/env bash
# A Docker engine for machines where no service manager runs one (Debian's docker.io installed by
# `make docker-packages`); it stops only the dockerd it started:
#
#   docker/engine.sh start [STATE_DIR]   prints "running" when an engine answers, else starts
#                                        dockerd (as root) and prints "started"
#   docker/engine.sh stop [STATE_DIR]    stops the dockerd whose pid STATE_DIR holds, if any
#
# STATE_DIR (default .local/docker) keeps that dockerd's pid and log.
set -euo pipefail
command=${1:-}
state=${2:-.local/docker}
pid_file="${state}/dockerd.pid"
log_file="${state}/dockerd.log"

answers() { docker info >/dev/null 2>&1; }

case "${command}" in
  start)
    if answers; then
      echo running
      exit 0
    fi
    if ! command -v dockerd >/dev/null; then
      echo "No Docker engine answers and dockerd is not installed: \`make docker-packages\`" \
        "(Debian's docker.io), or start Docker Desktop." >&2
      exit 2
    fi
    mkdir -p "${state}"
    setsid dockerd >>"${log_file}" 2>&1 </dev/null &
    echo $! >"${pid_file}"
    for _ in $(seq 90); do
      if answers; then
        echo started
        exit 0
      fi
      kill -0 "$(<"${pid_file}")" 2>/dev/null || break
      sleep 1
    done
    echo "dockerd did not start; the end of its log (${log_file}):" >&2
    tail -20 "${log_file}" >&2
    # Not left half-started: the next start would run a second dockerd beside it.
    kill -KILL "$(<"${pid_file}")" 2>/dev/null || true
    rm -f "${pid_file}"
    exit 1
    ;;
  stop)
    [[ -f "${pid_file}" ]] || exit 0
    pid="$(<"${pid_file}")"
    if kill -0 "${pid}" 2>/dev/null; then
      kill -TERM "${pid}"
      for _ in $(seq 60); do
        kill -0 "${pid}" 2>/dev/null || break
        sleep 1
      done
      if kill -0 "${pid}" 2>/dev/null; then
        kill -KILL "${pid}"
      fi
      echo "stopped dockerd ${pid}"
    fi
    rm -f "${pid_file}"
    ;;
  *)
    echo "usage: docker/engine.sh start|stop [STATE_DIR]" >&2
    exit 2
    ;;
esac
