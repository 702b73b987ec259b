#!/usr/bin/env bash
# Runs an MWAA startup script the way MWAA does, for docker-compose and the tests.
#
#   bash localdev/mwaa_startup.sh STARTUP_SCRIPT ENV_JSON [ENV_EXPORTS]
#
# What MWAA does (aws/amazon-mwaa-docker-images, bin/airflow-user/execute-user-startup-script
# and python/mwaa/config/setup_environment.py): the script is *sourced*, with `exit` aliased to
# a handler that saves the environment as JSON and leaves; the handler also runs when the script
# ends. The component then starts with the saved variables; with no JSON it fails. A script that
# kills the sourcing shell (e.g. a top-level `set -e` that trips) therefore saves nothing.
# ENV_EXPORTS, if given, gets the saved environment as `declare -x` lines, to source.

startup_script=$1
env_json=$2
env_exports=${3:-}
rm -f "${env_json}"

save_environment_and_leave() {
  # Readable by this user alone: the environment holds the component's secrets.
  umask 077
  # The environment as this shell holds it (`env`, not a Python's own, which a wrapper such
  # as pyenv may have changed).
  env -0 | python3 -c '
import json, sys
pairs = sys.stdin.buffer.read().decode().split("\0")
json.dump(dict(pair.split("=", 1) for pair in pairs if pair), open(sys.argv[1], "w"))
' "${env_json}"
  if [[ -n "${env_exports}" ]]; then
    export -p >"${env_exports}"
  fi
  echo "mwaa_startup: ${startup_script} ended; environment saved to ${env_json}"
  unalias exit
  exit
}

shopt -s expand_aliases
alias exit=save_environment_and_leave
echo "mwaa_startup: sourcing ${startup_script}"
# shellcheck disable=SC1090 # the script to run is the argument
source "${startup_script}"
save_environment_and_leave
