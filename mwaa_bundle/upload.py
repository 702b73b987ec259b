"""The upload to the MWAA bucket: ``dags/`` synced, ``plugins.zip``, ``requirements.txt`` and
``startup.sh`` uploaded, each object carrying the bundle's Airflow version as its S3 user
metadata ``airflow-version`` (which cloudformation/deploy.sh reads too); an environment that
runs another Airflow version is refused first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mwaa_bundle import BundleError
from mwaa_bundle.build import bundle_airflow_version

VERSIONED_OBJECTS = {
    "plugins.zip": "PluginsS3ObjectVersion",
    "requirements.txt": "RequirementsS3ObjectVersion",
    "startup.sh": "StartupScriptS3ObjectVersion",
}
VERSION_METADATA = "airflow-version"


def check_environment_version(mwaa_client: Any, environment: str, airflow: str) -> None:
    """Refuse an MWAA environment whose Airflow version is not ``airflow``: a bundle's
    requirements.txt carries its own version's constraints (and cp312 wheels for 2.11.0 and
    3.0.6), which pip cannot install on another."""
    from botocore.exceptions import ClientError

    try:
        running = mwaa_client.get_environment(Name=environment)["Environment"]["AirflowVersion"]
    except ClientError as error:
        raise BundleError(f"Reading MWAA environment {environment} failed: {error}") from None
    if running != airflow:
        raise BundleError(
            f"MWAA environment {environment} runs Airflow {running}, the bundle is built for "
            f"{airflow}: deploy with AIRFLOW_TARGET={running}, or change the environment's "
            "AirflowVersion first (README, Airflow versions)"
        )


def deploy_bundle(bundle: Path, s3_client: Any, bucket: str) -> dict[str, str]:
    """Sync ``dags/`` and upload the versioned objects, each with the bundle's Airflow version
    as its ``airflow-version`` metadata; return the versioned objects' version ids."""
    extra = {"Metadata": {VERSION_METADATA: bundle_airflow_version(bundle)}}
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
        s3_client.upload_file(str(path), bucket, key, ExtraArgs=extra)
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix="dags/"):
        for item in page.get("Contents", []):
            if item["Key"] not in wanted:
                s3_client.delete_object(Bucket=bucket, Key=item["Key"])
    versions = {}
    for name, parameter in VERSIONED_OBJECTS.items():
        s3_client.upload_file(str(bundle / name), bucket, name, ExtraArgs=extra)
        versions[parameter] = s3_client.head_object(Bucket=bucket, Key=name)["VersionId"]
    return versions
