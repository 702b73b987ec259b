"""Local development: the stand-in stack, the local Airflow, the demo and the MWAA bundle."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
