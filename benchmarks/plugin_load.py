"""What Airflow's plugin manager loads from the plugins folder, and how long it takes.

    python -m benchmarks.plugin_load [--runs 3] [--target 2.10.3|2.11.0|3.0.6]

Every Airflow component (scheduler, worker, web server) runs the plugin manager at start.
Side by side, alternating, each run in a fresh process: the plugins folder as plugins.zip lays
it out without ``plugins/.airflowignore`` (every module of ``movielens_pipeline`` imported as a
top-level plugin module, Cosmos with them) and with it. Prints the seconds
``plugins_manager.ensure_plugins_loaded()`` takes, the process's wall time (Airflow's import
included) and the modules loaded from the plugins folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from localdev import REPO_ROOT
from localdev.airflow_env import airflow_base_env, without_airflow_settings
from mwaa_bundle.build import PLUGINS_IGNORE
from mwaa_bundle.targets import DEFAULT_TARGET, TARGETS


def plugin_load(python: Path, plugins_folder: Path) -> dict:
    """Run the plugin manager on ``plugins_folder`` in a fresh ``python`` process: its seconds,
    the process's wall seconds, the modules it loaded from the folder, its import errors, and
    where ``movielens_pipeline`` then imports from."""
    with tempfile.TemporaryDirectory(prefix="plugin-load-") as home:
        env = {
            **without_airflow_settings(os.environ),
            **airflow_base_env(Path(home), runtime="aws", plugins_folder=plugins_folder),
        }
        # What Airflow itself puts on the path, and the repository root for the probe module.
        env["PYTHONPATH"] = str(REPO_ROOT)
        started = time.perf_counter()
        result = subprocess.run(
            [str(python), "-m", "benchmarks.plugin_probe", str(plugins_folder.resolve()) + os.sep],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"The plugin manager failed on {plugins_folder}:\n{result.stderr[-3000:]}"
        )
    return {**json.loads(result.stdout.splitlines()[-1]), "wall": wall}


def plugins_folders(root: Path) -> dict[str, Path]:
    """The plugins folder without and with ``.airflowignore``, as plugins.zip lays it out."""
    folders = {}
    for label, ignore in (("without .airflowignore", False), ("with .airflowignore", True)):
        folder = root / label.replace(" ", "_")
        shutil.copytree(
            REPO_ROOT / "plugins", folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        if not ignore:
            (folder / PLUGINS_IGNORE.name).unlink()
        folders[label] = folder
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--target", choices=TARGETS, default=DEFAULT_TARGET)
    args = parser.parse_args(argv)
    python = TARGETS[args.target].interpreter
    with tempfile.TemporaryDirectory(prefix="bench-plugins-") as scratch:
        folders = plugins_folders(Path(scratch))
        results: dict[str, list[dict]] = {label: [] for label in folders}
        for run in range(1, args.runs + 1):
            for label, folder in folders.items():
                report = plugin_load(python, folder)
                results[label].append(report)
                print(
                    f"run {run} {label:<24} plugin load {report['seconds']:6.2f} s, "
                    f"process {report['wall']:6.2f} s, {len(report['modules'])} modules",
                    flush=True,
                )
    print(f"Airflow {args.target} ({python}), median of {args.runs} fresh processes:")
    for label, reports in results.items():
        seconds = statistics.median(report["seconds"] for report in reports)
        wall = statistics.median(report["wall"] for report in reports)
        modules = reports[-1]["modules"]
        print(
            f"  {label:<24} plugin load {seconds:6.2f} s, process {wall:6.2f} s, "
            f"{len(modules)} modules from the plugins folder{': ' if modules else ''}"
            f"{' '.join(modules)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
