#!/usr/bin/env bash
# MWAA startup script: builds the dbt venv that Cosmos runs dbt from.
#
# dbt cannot install into MWAA's constrained Airflow environment (its pins conflict with the
# Airflow constraints), so it gets a venv of its own, installed offline (--no-index) from the
# wheels that `make bundle` ships in plugins.zip (MWAA extracts them to
# /usr/local/airflow/plugins/wheels/dbt): no container builds dbt from the internet.
#
# MWAA *sources* this file, on every component, before the requirements and Airflow, on a
# fresh container, within 5 minutes (bin/airflow-user/execute-user-startup-script aliases
# `exit` to a handler that saves the environment to /tmp/customer_env_vars.json, then sources
# this file; without that JSON the container fails). So this file changes no shell option and
# never exits: the build runs in a subshell that reports its status. If it fails, this says so,
# sets MOVIELENS_DBT_VENV_ERROR, and the component still starts (the DAG's dbt tasks then fail
# with that message).
#
# The venv goes where the DAG looks for dbt: the [movielens] dbt_executable_path option
# (<venv>/bin/dbt), which cloudformation/mwaa.yaml sets in AirflowConfigurationOptions. MWAA runs
# this script with the environment's configuration options as AIRFLOW__<SECTION>__<KEY>
# variables, and they override whatever this script exports (aws/amazon-mwaa-docker-images
# images/airflow/2.10.3/python/mwaa/config/setup_environment.py): so this script reads the
# option and exports no Airflow option of its own.
#
# Locally, `make venvs` sources this same script with
# AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH=.venv/dbt/bin/dbt and
# DBT_WHEELHOUSE=.local/wheelhouse/2.10.3/dbt (the wheels the 2.10.3 bundle ships).

movielens_dbt_packages="dbt-core==1.11.16 dbt-postgres==1.11.0 dbt-redshift==1.11.2"

# Runs "$@" (a pip command) up to MOVIELENS_PIP_ATTEMPTS times, pausing
# MOVIELENS_PIP_RETRY_SECONDS x the attempt number between tries.
movielens_pip() {
  local attempts="${MOVIELENS_PIP_ATTEMPTS:-3}" pause="${MOVIELENS_PIP_RETRY_SECONDS:-5}"
  local attempt=1 status=0
  while true; do
    "$@" && return 0
    status=$?
    if ((attempt >= attempts)); then
      echo "startup.sh: pip failed ${attempt} times (last status ${status}); giving up" >&2
      return "${status}"
    fi
    echo "startup.sh: pip attempt ${attempt}/${attempts} failed (status ${status});" \
      "retrying in $((pause * attempt)) s"
    sleep "$((pause * attempt))"
    attempt=$((attempt + 1))
  done
}

# Builds the venv $1 with Python $3 from the wheelhouse $2 with the pins $4, unless it is up to
# date. A subshell: nothing here reaches the sourcing shell but the status.
movielens_build_dbt_venv() (
  set +e +u # every step below checks its own status, whatever the sourcing shell set
  venv="$1" wheelhouse="$2" python="$3" packages="$4" started="${SECONDS}"
  stamp="${venv}/.movielens-packages"
  if [[ -x "${venv}/bin/dbt" && -f "${stamp}" && "$(cat "${stamp}")" == "${packages}" ]]; then
    echo "startup.sh: dbt venv at ${venv} is up to date"
    return 0
  fi
  echo "startup.sh: building the dbt venv at ${venv} (${packages}) from ${wheelhouse}" \
    "with ${python} ($("${python}" -c 'import sys; print(sys.version.split()[0])' 2>&1 | tail -1))"
  if [[ ! -d "${wheelhouse}" ]]; then
    echo "startup.sh: no wheelhouse at ${wheelhouse}: deploy the plugins.zip \`make bundle\` builds" >&2
    return 2
  fi
  # The path comes from the configuration: never delete a folder this script did not build.
  if [[ -e "${venv}" && ! -f "${stamp}" ]]; then
    echo "startup.sh: ${venv} exists and is not a dbt venv this script built (or its build was cut short); leaving it: remove it, or point [movielens] dbt_executable_path elsewhere" >&2
    return 6
  fi
  rm -rf "${venv}"
  if ! "${python}" -m venv "${venv}"; then
    echo "startup.sh: '${python} -m venv ${venv}' failed" >&2
    rm -rf "${venv}"
    return 3
  fi
  # shellcheck disable=SC2086 # the package list is split on purpose
  if ! movielens_pip "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-index --find-links "${wheelhouse}" ${packages}; then
    rm -rf "${venv}"
    return 4
  fi
  # dbt and both adapters import (`dbt --version` would also ask PyPI for the latest release).
  if ! "${venv}/bin/python" -c "import dbt.cli.main, dbt.adapters.postgres, dbt.adapters.redshift"; then
    echo "startup.sh: the new dbt venv does not import dbt and its adapters" >&2
    rm -rf "${venv}"
    return 5
  fi
  echo "${packages}" >"${stamp}"
  echo "startup.sh: dbt venv built in $((SECONDS - started)) s"
)

# Only the components that parse or run DAGs need dbt.
if [[ "${MWAA_AIRFLOW_COMPONENT:-}" == "webserver" ]]; then
  echo "startup.sh: webserver does not run dbt; skipping the dbt venv"
else
  unset MOVIELENS_DBT_VENV_ERROR
  movielens_dbt="${AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH:-${AIRFLOW_HOME:-/usr/local/airflow}/dbt_venv/bin/dbt}"
  movielens_dbt_venv="${movielens_dbt%/bin/dbt}"
  movielens_status=0
  if [[ "${movielens_dbt_venv}/bin/dbt" != "${movielens_dbt}" ]]; then
    echo "startup.sh: [movielens] dbt_executable_path ${movielens_dbt} is not <venv>/bin/dbt" >&2
    movielens_status=1
  else
    movielens_build_dbt_venv "${movielens_dbt_venv}" \
      "${DBT_WHEELHOUSE:-/usr/local/airflow/plugins/wheels/dbt}" "${PYTHON:-python3}" \
      "${movielens_dbt_packages}" || movielens_status=$?
  fi
  if [[ "${movielens_status}" != 0 ]]; then
    export MOVIELENS_DBT_VENV_ERROR="startup.sh could not build the dbt venv at ${movielens_dbt_venv} (status ${movielens_status}); see this component's startup log"
    echo "startup.sh: ERROR: ${MOVIELENS_DBT_VENV_ERROR}." \
      "The component starts without dbt; the DAG's dbt tasks will fail." >&2
  fi
  unset movielens_dbt movielens_dbt_venv movielens_status
fi
unset -f movielens_pip movielens_build_dbt_venv
unset movielens_dbt_packages

# Run as `bash startup.sh`, the script's status is the build's. Sourced (as MWAA does it), it is
# 0, so that the sourcing shell carries on to its exit handler whatever its options.
[[ "${BASH_SOURCE[0]}" != "${0}" || -z "${MOVIELENS_DBT_VENV_ERROR:-}" ]]
