"""Build, check and upload the MWAA bundle.

    python -m mwaa_bundle build [--target 2.10.3|2.11.0|3.0.6]
    python -m mwaa_bundle deploy --bucket <the mwaa stack's bucket> [--target ...]
                                 [--environment NAME] [--endpoint-url URL]
    python -m mwaa_bundle wheelhouse [--target ...]
    python -m mwaa_bundle image-lock [--target ...]
    python -m mwaa_bundle image-packages --target ... --bom BOM.txt --commit SHA

``deploy`` syncs ``dags/``, uploads the other three objects and prints the S3 object versions
that the MWAA environment must point at; with ``--environment`` it first refuses an
environment that runs another Airflow version.

Nothing on MWAA reaches PyPI: a private web server has no route to it, and a container that
rebuilt dbt from the internet on every start would depend on it. ``plugins.zip`` carries, under
``wheels/``, every wheel MWAA installs (MWAA extracts it to /usr/local/airflow/plugins):
``wheels/requirements`` (what ``requirements.txt`` installs with ``--no-index``: what the MWAA
image lacks), ``wheels/dbt`` (the dbt venv ``startup.sh`` builds) and the Airflow constraints
``requirements.txt`` names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mwaa_bundle import BundleError
from mwaa_bundle.build import build_bundle, bundle_size
from mwaa_bundle.targets import DEFAULT_TARGET, TARGETS, image_lock, image_packages_text
from mwaa_bundle.upload import check_environment_version, deploy_bundle
from mwaa_bundle.wheelhouse import ensure_wheelhouse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    target_help = "MWAA's Airflow version (default %(default)s)"
    build = commands.add_parser("build", help="build and check build/mwaa[-<version>]")
    deploy = commands.add_parser("deploy", help="build, check and upload to the MWAA bucket")
    deploy.add_argument("--bucket", required=True)
    deploy.add_argument("--endpoint-url", default=None, help="an S3 API other than AWS's")
    deploy.add_argument(
        "--environment", default=None, help="the MWAA environment: refuse another Airflow version"
    )
    wheelhouse = commands.add_parser("wheelhouse", help="download (or reuse) the target's wheels")
    lock = commands.add_parser("image-lock", help="print what the MWAA image holds of the lock")
    packages = commands.add_parser("image-packages", help="print the image's list from its BOM")
    packages.add_argument("--bom", type=Path, required=True, help="Python-Packages-BOM.txt")
    packages.add_argument("--commit", required=True, help="amazon-mwaa-docker-images commit")
    for command in (build, deploy, wheelhouse, lock, packages):
        command.add_argument("--target", choices=TARGETS, default=DEFAULT_TARGET, help=target_help)
    args = parser.parse_args(argv)
    target = TARGETS[args.target]
    try:
        if args.command == "image-packages":
            print(image_packages_text(target, args.bom.read_text(), args.commit), end="")
            return 0
        if args.command == "image-lock":
            print("\n".join(f"{name}=={version}" for name, version in image_lock(target).items()))
            return 0
        if args.command == "wheelhouse":
            house = ensure_wheelhouse(target)
            print(f"wheelhouse: {house} ({bundle_size(house) / 2**20:.1f} MiB)")
            return 0
        if args.command == "deploy" and args.environment:
            import boto3

            check_environment_version(boto3.client("mwaa"), args.environment, target.airflow)
        bundle = build_bundle(target)
        size, plugins_size = bundle_size(bundle), (bundle / "plugins.zip").stat().st_size
        print(
            f"bundle for Airflow {target.airflow}: {bundle} ({size / 2**20:.1f} MiB; "
            f"plugins.zip {plugins_size / 2**20:.1f} MiB); "
            "requirements and dbt install offline, DAGs import cleanly"
        )
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
