"""Local development: the stand-in stack, the local Airflow, the demo and the procedures."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The MWAA startup script: the bundle ships it, the local dbt venv is built by sourcing it.
STARTUP_SCRIPT = REPO_ROOT / "startup.sh"
