"""Build, check and upload the MWAA bundle.

    python -m localdev.mwaa_bundle build
    python -m localdev.mwaa_bundle deploy --bucket data-handson-mds-mwaa-dev [--endpoint-url URL]

The bundle is laid out as the MWAA bucket holds it: ``dags/`` (the DAG files and
``dags/dbt/movielens_redshift`` with its prebuilt manifest), ``plugins.zip``,
``requirements.txt`` and ``startup.sh``. ``deploy`` syncs ``dags/``, uploads the other three
and prints the S3 object versions that the MWAA environment must point at.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from localdev.airflow_env import airflow_base_env, dagbag_report, without_airflow_settings
from localdev.stack import REPO_ROOT
from movielens_pipeline.dbt_config import DbtManifestError, manifest_path

BUILD_DIR = REPO_ROOT / "build" / "mwaa"
DBT_PROJECT = REPO_ROOT / "dbt" / "movielens_redshift"
DBT_PROJECT_PARTS = ("dbt_project.yml", "models", "macros", "tests", "target/manifest.json")
VERSIONED_OBJECTS = {
    "plugins.zip": "PluginsS3ObjectVersion",
    "requirements.txt": "RequirementsS3ObjectVersion",
    "startup.sh": "StartupScriptS3ObjectVersion",
}


class BundleError(RuntimeError):
    """The bundle cannot be built, fails its check, or cannot be uploaded."""


def build_bundle(out_dir: Path = BUILD_DIR) -> Path:
    """Lay the bundle out in ``out_dir`` (replacing it) and check that MWAA can import it."""
    try:
        manifest_path(DBT_PROJECT)
    except DbtManifestError as error:
        raise BundleError(str(error)) from None
    shutil.rmtree(out_dir, ignore_errors=True)
    dags = out_dir / "dags"
    dags.mkdir(parents=True)
    for dag_file in sorted((REPO_ROOT / "dags").glob("*.py")):
        shutil.copy2(dag_file, dags / dag_file.name)
    project = dags / "dbt" / "movielens_redshift"
    for part in DBT_PROJECT_PARTS:
        source = DBT_PROJECT / part
        if source.is_dir():
            shutil.copytree(source, project / part)
        else:
            (project / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, project / part)
    with zipfile.ZipFile(out_dir / "plugins.zip", "w", zipfile.ZIP_DEFLATED) as plugins:
        for path in sorted((REPO_ROOT / "plugins").rglob("*.py")):
            plugins.write(path, path.relative_to(REPO_ROOT / "plugins").as_posix())
    for name in ("requirements.txt", "startup.sh"):
        shutil.copy2(REPO_ROOT / name, out_dir / name)
    check_bundle(out_dir)
    return out_dir


def check_bundle(bundle: Path) -> None:
    """Import the bundle's DAGs as MWAA would: DAG folder and plugins.zip only, AWS runtime."""
    with tempfile.TemporaryDirectory(prefix="mwaa-check-") as home:
        env = {
            **without_airflow_settings(os.environ),
            **airflow_base_env(
                Path(home),
                runtime="aws",
                dags_folder=bundle / "dags",
                plugins_folder=Path(home) / "plugins",
            ),
            "PYTHONPATH": str(bundle / "plugins.zip"),
        }
        try:
            report = dagbag_report(Path(sys.executable), bundle / "dags", env)
        except RuntimeError as error:
            raise BundleError(f"Importing the bundle failed: {error}") from None
    if report["errors"] or len(report["dags"]) != len(list((bundle / "dags").glob("*.py"))):
        raise BundleError(f"The bundle's DAGs do not import: {report}")


def bundle_size(bundle: Path) -> int:
    return sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file())


def deploy_bundle(bundle: Path, s3_client: Any, bucket: str) -> dict[str, str]:
    """Sync ``dags/`` and upload the versioned objects; return their version ids."""
    versioning = s3_client.get_bucket_versioning(Bucket=bucket).get("Status")
    if versioning != "Enabled":
        raise BundleError(
            f"s3://{bucket} has no versioning: MWAA pins plugins.zip, requirements.txt and "
            "startup.sh by object version. Enable versioning on the bucket first."
        )
    wanted = {
        path.relative_to(bundle).as_posix(): path
        for path in (bundle / "dags").rglob("*")
        if path.is_file()
    }
    for key, path in sorted(wanted.items()):
        s3_client.upload_file(str(path), bucket, key)
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix="dags/"):
        for item in page.get("Contents", []):
            if item["Key"] not in wanted:
                s3_client.delete_object(Bucket=bucket, Key=item["Key"])
    versions = {}
    for name, parameter in VERSIONED_OBJECTS.items():
        s3_client.upload_file(str(bundle / name), bucket, name)
        versions[parameter] = s3_client.head_object(Bucket=bucket, Key=name)["VersionId"]
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build and check build/mwaa")
    deploy = commands.add_parser("deploy", help="build, check and upload to the MWAA bucket")
    deploy.add_argument("--bucket", required=True)
    deploy.add_argument("--endpoint-url", default=None, help="an S3 API other than AWS's")
    args = parser.parse_args(argv)
    try:
        bundle = build_bundle()
        print(f"bundle: {bundle} ({bundle_size(bundle) / 1024:.0f} KiB), DAGs import cleanly")
        if args.command == "deploy":
            import boto3

            client = boto3.client("s3", endpoint_url=args.endpoint_url)
            versions = deploy_bundle(bundle, client, args.bucket)
            print(f"uploaded to s3://{args.bucket}; point the MWAA environment at:")
            for parameter, version in versions.items():
                print(f"  {parameter}={version}")
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
