"""One ratings load in a process of its own, so that its peak memory is the load's alone.

    python -m benchmarks.child_load STACK_ROOT AURORA_PORT WAREHOUSE_PORT S3_PORT KEY

Prints ``{"rows", "seconds", "peak_mib"}`` as JSON; an empty KEY loads nothing (the baseline
of the interpreter and its imports). ``benchmarks.ingestion.child_load`` runs it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from localdev.stack import LocalStack
from movielens_pipeline.aurora_load import StreamedCopyImport, load_table
from movielens_pipeline.tables import TABLES_BY_NAME


def load_ratings(stack: LocalStack, key: str) -> tuple[int, float]:
    """Rows loaded from ``key`` and the seconds it took (client and connection made before
    the clock: a fixed cost, not a per-row one)."""
    importer = StreamedCopyImport(stack.s3_client())
    connection = stack.connect("source")
    started = time.perf_counter()
    rows = load_table(connection, TABLES_BY_NAME["ratings"], importer, stack.bucket, key)
    seconds = time.perf_counter() - started
    connection.close()
    return rows, seconds


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


if __name__ == "__main__":
    root, aurora, warehouse, s3, key = sys.argv[1:6]
    stack = LocalStack(Path(root), int(aurora), int(warehouse), int(s3))
    rows, seconds = load_ratings(stack, key) if key else (0, 0.0)
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak_mib()}))
