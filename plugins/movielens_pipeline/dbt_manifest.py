"""The dbt manifest Cosmos renders from: built by ``dbt parse``, checked against every file
dbt parses, so that a stale manifest is a clear error (or, locally, parsed again).

No Airflow import: ``make dbt-manifest`` and the bundle build use it outside Airflow.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
from pathlib import Path

import yaml


class DbtManifestError(RuntimeError):
    """The prebuilt dbt manifest is missing, unreadable or older than the project."""


# Written beside the manifest by parse_project: the SHA-256 of every file dbt parsed.
PARSED_FILES_RECORD = "parsed_files.json"
# The project-level files dbt reads when present, and the folders it parses with their
# defaults (dbt_project.yml's *-paths); profiles.yml is not part of the manifest.
_PROJECT_FILES = ("dbt_project.yml", "packages.yml", "dependencies.yml", "selectors.yml")
_PROJECT_PATHS = {
    "model-paths": ["models"],
    "macro-paths": ["macros"],
    "test-paths": ["tests"],
    "seed-paths": ["seeds"],
    "snapshot-paths": ["snapshots"],
    "analysis-paths": ["analyses"],
    "docs-paths": [],
}
REBUILD_HINT = "rebuild it with `make dbt-manifest` (dbt parse) and deploy it with the DAGs"


def parsed_files(project_dir: Path) -> dict[str, str]:
    """Every file of the project that dbt parses, by path relative to it, and its SHA-256."""
    project = yaml.safe_load((project_dir / "dbt_project.yml").read_text(encoding="utf-8"))
    files = [project_dir / name for name in _PROJECT_FILES if (project_dir / name).is_file()]
    for key, default in _PROJECT_PATHS.items():
        for folder in project.get(key, default):
            files += [path for path in (project_dir / folder).rglob("*") if path.is_file()]
    return {
        path.relative_to(project_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(set(files))
        if not path.name.startswith(".")
    }


def parse_project(
    project_dir: Path, dbt_executable: Path, target_path: Path | None = None, *dbt_args: str
) -> Path:
    """``dbt parse`` into ``target_path`` (default ``target/``), then the record of the files
    parsed; returns the manifest. ``dbt_args`` go to dbt (e.g. ``--target redshift``)."""
    target_path = target_path or project_dir / "target"
    before = parsed_files(project_dir)
    result = subprocess.run(
        [
            str(dbt_executable),
            *("parse", "--quiet", *dbt_args),
            *("--profiles-dir", str(project_dir), "--project-dir", str(project_dir)),
            *("--target-path", str(target_path)),
        ],
        cwd=project_dir,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise DbtManifestError(
            f"dbt parse of {project_dir} failed (exit {result.returncode}):\n"
            f"{(result.stdout + result.stderr)[-3000:]}"
        )
    # A file edited while dbt parsed is recorded as it was before, so the next check rebuilds.
    (target_path / PARSED_FILES_RECORD).write_text(json.dumps(before, indent=1, sort_keys=True))
    return target_path / "manifest.json"


def manifest_path(project_dir: Path, autoparse_with: Path | None = None) -> Path:
    """The manifest Cosmos renders from, checked against every file dbt parses.

    With ``autoparse_with`` (a dbt executable: the local Airflow's setting
    ``dbt_manifest_autoparse``) a missing or stale manifest is parsed again instead of
    failing the DAG's import, so that an edited model, test or macro just runs.
    """
    problem = _manifest_problem(project_dir)
    if problem and autoparse_with is not None:
        target = project_dir / "target"
        target.mkdir(exist_ok=True)
        # The scheduler and the DAG processors may parse the DAG file at the same time.
        with open(target / ".parse.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _manifest_problem(project_dir):
                parse_project(project_dir, autoparse_with)
        problem = _manifest_problem(project_dir)
    if problem:
        raise DbtManifestError(f"dbt manifest {project_dir / 'target' / 'manifest.json'} {problem}")
    return project_dir / "target" / "manifest.json"


def _manifest_problem(project_dir: Path) -> str | None:
    """What is wrong with the project's manifest, as the end of a sentence, or None."""
    target = project_dir / "target"
    if not (target / "manifest.json").is_file():
        return f"is missing: {REBUILD_HINT}."
    try:
        json.loads((target / "manifest.json").read_text(encoding="utf-8"))["nodes"]
        recorded = json.loads((target / PARSED_FILES_RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"has no {PARSED_FILES_RECORD} beside it: {REBUILD_HINT}."
    except (ValueError, KeyError, TypeError) as error:
        return f"is unreadable ({error}): {REBUILD_HINT}."
    on_disk = parsed_files(project_dir)
    changes = [f"{name} added" for name in sorted(set(on_disk) - set(recorded))]
    changes += [f"{name} removed" for name in sorted(set(recorded) - set(on_disk))]
    changes += [
        f"{name} edited"
        for name in sorted(set(on_disk) & set(recorded))
        if on_disk[name] != recorded[name]
    ]
    if changes:
        return f"is stale, files changed since it was built ({', '.join(changes)}): {REBUILD_HINT}."
    return None
