"""What `make help` offers a newcomer, and what `make clean` stops."""

from __future__ import annotations

import re
import subprocess

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


def test_clean_stops_the_local_airflow_before_deleting_its_environment() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    (prerequisites,) = re.findall(r"^clean:([^#\n]*)", makefile, re.M)
    assert "airflow-stop" in prerequisites.split()
    (stop_recipe,) = re.findall(r"^airflow-stop:.*\n\t(.*)", makefile, re.M)
    assert "localdev.airflow_local stop" in stop_recipe
