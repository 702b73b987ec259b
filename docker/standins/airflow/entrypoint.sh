#!/usr/bin/env bash
# Entrypoint of the apache/airflow stand-in (docker/standins/build.sh), as the official image
# treats its command: `bash ...` and `python ...` run as given, anything else is an airflow
# subcommand. docker-compose.yaml sets its own entrypoint on every Airflow service.
case "${1:-}" in
  bash | python | python3) exec "$@" ;;
  *) exec airflow "$@" ;;
esac
