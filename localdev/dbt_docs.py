"""Serve the dbt docs site the transform DAG published to the local S3 API.

    python -m localdev.dbt_docs [--port 8081]

The DAG's ``publish_dbt_docs`` task uploads ``index.html``, ``manifest.json`` and
``catalog.json`` to ``s3://<dbt_docs_bucket>/dbt-docs/`` (on AWS too). This fetches them from
the local stack into ``.local/dbt-docs`` and serves them on loopback: models, tests and
lineage in a browser, no dbt needed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import sys
from pathlib import Path

from localdev import REPO_ROOT
from localdev.stack import LocalStack
from movielens_pipeline.names import DBT_DOCS_PREFIX

SITE_FILES = ("index.html", "manifest.json", "catalog.json")
SITE_DIR = REPO_ROOT / ".local" / "dbt-docs"


def fetch_site(stack: LocalStack, site_dir: Path = SITE_DIR) -> Path:
    """Download the published site; fail with what to do when the DAG has not published it."""
    s3 = stack.s3_client()
    site_dir.mkdir(parents=True, exist_ok=True)
    for name in SITE_FILES:
        key = f"{DBT_DOCS_PREFIX}/{name}"
        try:
            s3.download_file(stack.bucket, key, str(site_dir / name))
        except s3.exceptions.ClientError:
            raise SystemExit(
                f"s3://{stack.bucket}/{key} is missing: run the transform DAG first "
                "(`make demo`), its publish_dbt_docs task uploads the site."
            ) from None
    return site_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("MOVIELENS_DBT_DOCS_PORT", "8081"))
    )
    args = parser.parse_args(argv)
    site = fetch_site(LocalStack())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    with http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler) as server:
        print(f"dbt docs: http://127.0.0.1:{args.port}/ (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
