"""What `make help` offers a newcomer, what `make clean` stops, and how the environments
are installed."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

from localdev import REPO_ROOT

GROUPS = [
    "Start here",
    "Operate the local stack and Airflow",
    "Test and lint",
    "Benchmark",
    "Deploy to AWS",
]


def documented_targets() -> list[str]:
    makefile = (REPO_ROOT / "Makefile").read_text()
    return re.findall(r"^([a-z0-9-]+)(?: [a-z0-9 -]*)?:.*## ", makefile, re.M)


def test_help_groups_every_target_and_starts_with_demo() -> None:
    output = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    headings = re.findall(r"^(\S.*):$", output, re.M)
    listed = re.findall(r"^  (\S+)\s", output, re.M)

    assert headings == GROUPS
    assert listed[0] == "demo"
    assert sorted(listed) == sorted(documented_targets())
    for group, block in zip(GROUPS, re.split(r"^\S.*:\n", output, flags=re.M)[1:], strict=True):
        assert block.strip(), f"{group} lists no target"


def make_dry_run(*args: str) -> list[str]:
    """The commands ``make`` would run for ``args``, in order, running none."""
    return subprocess.run(
        ["make", "--no-print-directory", "--dry-run", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()


def test_clean_stops_the_local_airflow_before_deleting_its_environment() -> None:
    commands = make_dry_run("clean")
    stop = next(i for i, line in enumerate(commands) if "localdev.airflow_local stop" in line)
    delete = next(i for i, line in enumerate(commands) if line.startswith("rm -rf .venv"))
    assert stop < delete


def test_the_no_docker_path_refuses_a_host_it_cannot_serve_and_names_docker_compose() -> None:
    refused = subprocess.run(
        ["make", "--no-print-directory", "check-platform", "HOST_PLATFORM=Darwin arm64"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0
    assert "needs Linux on x86_64" in refused.stdout and "this is Darwin arm64" in refused.stdout
    (docker_target,) = re.findall(r"Use docker compose instead: make ([a-z-]+)", refused.stdout)
    assert docker_target in documented_targets()
    # The dbt environment, built from the MWAA wheels, checks it first.
    makefile = (REPO_ROOT / "Makefile").read_text()
    (prerequisites,) = re.findall(r"^\$\(VENV\)/dbt/\.installed:(.*)$", makefile, re.M)
    assert "check-platform" in prerequisites.split()


def test_the_environment_running_the_tests_ships_the_bytecode_of_every_module() -> None:
    # `make` installs every environment with its .pyc files: where PYTHONDONTWRITEBYTECODE is
    # set, nothing writes them later, and each Airflow task process would compile Airflow and
    # Cosmos from source again. Modules this run never imported count as much as the rest.
    site_packages = Path(sysconfig.get_paths()["purelib"])
    assert Path(sys.prefix).name == "airflow", sys.prefix  # .venv/airflow, the Makefile's
    sources = [
        source
        for package in ("airflow", "cosmos", "botocore")
        for source in (site_packages / package).rglob("*.py")
    ]
    assert len(sources) > 1000
    missing = [s for s in sources if not Path(importlib.util.cache_from_source(str(s))).is_file()]
    assert missing == [], f"{len(missing)} modules without bytecode, e.g. {missing[:3]}"
