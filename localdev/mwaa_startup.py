"""MWAA's startup sequence, emulated here: the startup script sourced as MWAA sources it
(``localdev/mwaa_startup.sh``, which docker-compose runs too)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from localdev import REPO_ROOT, STARTUP_SCRIPT

MWAA_STARTUP_RUNNER = REPO_ROOT / "localdev" / "mwaa_startup.sh"


def run_startup_script_as_mwaa(
    env: dict[str, str], work: Path, script: Path = STARTUP_SCRIPT, timeout: float = 295
) -> tuple[subprocess.CompletedProcess, dict[str, str] | None]:
    """Run ``script`` as MWAA does (``localdev/mwaa_startup.sh``, within MWAA's 5 minutes
    less 5 s); return the process and the environment it saved (or None)."""
    env_json = work / "customer_env_vars.json"
    work.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["/bin/bash", str(MWAA_STARTUP_RUNNER), str(script), str(env_json)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    saved = json.loads(env_json.read_text()) if env_json.is_file() else None
    return result, saved
