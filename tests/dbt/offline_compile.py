"""Compile the dbt project for a target with no warehouse to talk to.

Run with the dbt venv's Python (it imports dbt):

    .venv/dbt/bin/python tests/dbt/offline_compile.py {full,incremental} <dbt compile args>

`dbt compile --no-populate-cache` needs no connection except where a model asks the
warehouse whether it exists: `is_incremental()` calls `adapter.get_relation`. Here that
call is answered without a connection, as if every relation were missing (`full`: the
first build of an incremental model) or were an existing table (`incremental`), so that
both branches of every incremental model can be compiled and checked.
"""

from __future__ import annotations

import sys

from dbt.adapters.base.impl import BaseAdapter
from dbt.cli.main import dbtRunner


def main(argv: list[str]) -> int:
    mode, *dbt_args = argv
    if mode not in ("full", "incremental"):
        raise SystemExit(f"mode must be 'full' or 'incremental', not {mode!r}")

    def get_relation(self, database, schema, identifier):
        if mode == "full":
            return None
        return self.Relation.create(
            database=database, schema=schema, identifier=identifier, type="table"
        )

    BaseAdapter.get_relation = get_relation
    result = dbtRunner().invoke(["compile", "--no-populate-cache", *dbt_args])
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
