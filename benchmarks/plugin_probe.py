"""Run Airflow's plugin manager once and report what it loaded from the plugins folder.

    python -m benchmarks.plugin_probe PLUGINS_FOLDER

Prints ``{"seconds", "modules", "errors", "package"}`` as JSON: the plugin manager's seconds,
the modules loaded from PLUGINS_FOLDER, its import errors, and where ``movielens_pipeline``
then imports from. ``benchmarks.plugin_load`` runs it in a fresh process per measurement.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time

from airflow import plugins_manager


def probe(folder: str) -> dict:
    started = time.perf_counter()
    plugins_manager.ensure_plugins_loaded()
    seconds = time.perf_counter() - started
    modules = sorted(
        name
        for name, module in list(sys.modules.items())
        if (getattr(module, "__file__", None) or "").startswith(folder)
    )
    package = importlib.util.find_spec("movielens_pipeline").origin
    return {
        "seconds": seconds,
        "modules": modules,
        "errors": plugins_manager.import_errors,
        "package": package,
    }


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])))
