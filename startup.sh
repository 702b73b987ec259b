#!/usr/bin/env bash
# MWAA startup script: builds the dbt venv that Cosmos runs dbt from.
#
# dbt cannot install into MWAA's constrained Airflow environment (its pins conflict with
# the Airflow 2.10.3 constraints), so it gets a venv of its own. MWAA runs this script on
# every component before Airflow starts, with a 5-minute limit; the venv is reused when
# its pins have not changed. Locally, `make venvs` runs the same script with
# DBT_VENV_PATH=.venv/dbt and PIP_CONSTRAINT pointing at the full lock.
set -euo pipefail

DBT_VENV_PATH="${DBT_VENV_PATH:-${AIRFLOW_HOME:-/usr/local/airflow}/dbt_venv}"
DBT_PACKAGES="dbt-core==1.11.16 dbt-postgres==1.11.0 dbt-redshift==1.11.2"
PYTHON="${PYTHON:-python3}"

# Only the components that parse or run DAGs need dbt.
if [[ "${MWAA_AIRFLOW_COMPONENT:-}" == "webserver" ]]; then
  echo "startup.sh: webserver does not run dbt; skipping the dbt venv"
  exit 0
fi

stamp="${DBT_VENV_PATH}/.movielens-packages"
if [[ -x "${DBT_VENV_PATH}/bin/dbt" && -f "${stamp}" && "$(cat "${stamp}")" == "${DBT_PACKAGES}" ]]; then
  echo "startup.sh: dbt venv at ${DBT_VENV_PATH} is up to date"
else
  echo "startup.sh: building the dbt venv at ${DBT_VENV_PATH} (${DBT_PACKAGES})"
  rm -rf "${DBT_VENV_PATH}"
  "${PYTHON}" -m venv "${DBT_VENV_PATH}"
  # shellcheck disable=SC2086 # the package list is split on purpose
  "${DBT_VENV_PATH}/bin/pip" install --quiet --disable-pip-version-check ${DBT_PACKAGES}
  "${DBT_VENV_PATH}/bin/dbt" --version >/dev/null
  echo "${DBT_PACKAGES}" > "${stamp}"
fi

# Read by the DAG's [movielens] dbt_executable_path default on MWAA.
export AIRFLOW__MOVIELENS__DBT_EXECUTABLE_PATH="${DBT_VENV_PATH}/bin/dbt"
