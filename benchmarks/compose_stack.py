"""docker compose timings: image builds, `up` to healthy, trigger to analytics, fresh and cached.

    python -m benchmarks.compose_stack [--fresh] [--rounds 2] [--json FILE]

Each round, as a user runs it: builds the images (the stand-ins one by one with
docker/standins/build.sh, unless MOVIELENS_COMPOSE_IMAGES=upstream; then the compose image with
`make compose-build`), times `make compose-up` until every service is healthy, runs `make
compose-demo` on the running stack (its summary printed; load triggered -> analytics from the
REST API) and `docker compose down -v`. Every round has a project name and ports of its own.
--fresh first removes the stand-ins, the compose image and every dangling image (Docker's build
cache), so that the first round builds from the Debian and PyPI packages; the later rounds reuse
the images. A Docker engine is started when none answers, and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from localdev.compose import (
    IMAGES_SWITCH,
    PROJECT_IMAGE,
    STANDIN_LABEL,
    STANDIN_STEPS,
    ComposeProject,
    build_standins,
    docker,
    docker_engine,
    private_env_file,
)
from localdev.demo import PipelineRun
from movielens_pipeline.names import LOAD_DAG_ID, TRANSFORM_DAG_ID

HEALTHY_WITHIN_SECONDS = 900


def remove_images() -> None:
    """The compose image, the stand-ins (only images labelled as such; newest first, so that
    each goes before the image it was built from), then every dangling image."""
    docker("image", "rm", PROJECT_IMAGE, check=False)
    for image in docker_images_labelled(STANDIN_LABEL):
        docker("image", "rm", image)
    docker("image", "prune", "--force")


def docker_images_labelled(label: str) -> list[str]:
    """Tagged images with ``label``, newest first."""
    listing = docker(
        "image", "ls", "--filter", f"label={label}", "--format", "{{.Repository}}:{{.Tag}}"
    )
    return [image for image in listing.stdout.split() if not image.endswith(":<none>")]


def image_megabytes(image: str) -> float:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout) / 2**20


def timed(action: Callable[..., object], *args: object, **kwargs: object) -> float:
    started = time.monotonic()
    action(*args, **kwargs)
    return time.monotonic() - started


def pipeline_run(project: ComposeProject, home: Path) -> PipelineRun:
    """The latest load and the transform run its Datasets started, from the REST API."""
    airflow = project.airflow(home)
    load = airflow.runs(LOAD_DAG_ID)[0]
    transform = next(
        run for run in airflow.runs(TRANSFORM_DAG_ID) if run["run_type"] == "dataset_triggered"
    )
    return PipelineRun(
        load,
        transform,
        {
            dag_id: airflow.task_instances(dag_id, run["dag_run_id"])
            for dag_id, run in ((LOAD_DAG_ID, load), (TRANSFORM_DAG_ID, transform))
        },
    )


def run_round(number: int, scratch: Path, images: str) -> dict:
    figures: dict = {"round": number, "builds": {}}
    if images == "standins":
        for step in STANDIN_STEPS:
            seconds = timed(build_standins, (step,), scratch / "standins.log")
            figures["builds"][step] = round(seconds, 1)
            print(f"round {number}: stand-in {step} built in {seconds:.1f} s", flush=True)
    env_file = private_env_file(scratch / f"round-{number}.env")
    project = ComposeProject(f"movielens-bench-{secrets.token_hex(4)}", env_file)
    # The stand-ins are built by now; `upstream` pulls the real images again.
    switch = {IMAGES_SWITCH: "upstream" if images == "upstream" else "auto"}
    try:
        seconds = timed(project.make, "compose-build", **switch)
        figures["builds"]["compose image"] = round(seconds, 1)
        print(f"round {number}: compose image built in {seconds:.1f} s", flush=True)

        started = time.monotonic()
        project.make("compose-up", **switch)
        project.wait_until_ready(HEALTHY_WITHIN_SECONDS)
        figures["up_to_healthy_seconds"] = round(time.monotonic() - started, 1)
        print(f"round {number}: up -> healthy {figures['up_to_healthy_seconds']} s", flush=True)

        started = time.monotonic()
        demo = project.make("compose-demo", **switch).stdout
        figures["demo_seconds"] = round(time.monotonic() - started, 1)
        run = pipeline_run(project, scratch / f"round-{number}-airflow")
        figures["trigger_to_analytics_seconds"] = round(run.total_seconds, 1)
        figures["hops"] = {hop: round(seconds, 1) for hop, seconds in run.hop_seconds().items()}
        figures["summary"] = demo[demo.index("MovieLens pipeline summary") :]
        print(figures["summary"], flush=True)
    finally:
        seconds = timed(project.compose, "down", "--volumes", "--remove-orphans")
        figures["down_seconds"] = round(seconds, 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="remove the images first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures there too")
    args = parser.parse_args(argv)
    images = os.environ.get(IMAGES_SWITCH, "standins")
    with (
        tempfile.TemporaryDirectory(prefix="bench-compose-") as scratch,
        docker_engine(Path(scratch) / "dockerd"),
    ):
        if args.fresh:
            remove_images()
        rounds = [run_round(n, Path(scratch), images) for n in range(1, args.rounds + 1)]
        images_built = [PROJECT_IMAGE, *docker_images_labelled(STANDIN_LABEL)]
        sizes = {image: round(image_megabytes(image), 1) for image in images_built}
    print(f"\ndocker compose on {os.cpu_count()} cores, images: {images}, fresh: {args.fresh}")
    for figures in rounds:
        builds = ", ".join(f"{name} {seconds} s" for name, seconds in figures["builds"].items())
        print(
            f"round {figures['round']}: builds {builds} (total "
            f"{sum(figures['builds'].values()):.1f} s); up -> healthy "
            f"{figures['up_to_healthy_seconds']} s; load triggered -> analytics "
            f"{figures['trigger_to_analytics_seconds']} s (make compose-demo "
            f"{figures['demo_seconds']} s); down -v {figures['down_seconds']} s"
        )
    print("image sizes (MiB): " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    if args.json:
        report = {"cores": os.cpu_count(), "images": images, "fresh": args.fresh}
        args.json.write_text(json.dumps({**report, "rounds": rounds, "sizes_mib": sizes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
