"""The wheels a bundle ships in plugins.zip's ``wheels/``: downloaded once per target from
PyPI for MWAA's platform (CPython of its image, manylinux x86_64) and cached in
``.local/wheelhouse/<airflow version>``, never committed."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mwaa_bundle import BundleError
from mwaa_bundle.targets import DBT_LOCK, Target, normalize, read_pins

# MWAA's images run on Amazon Linux 2023 (glibc 2.34, x86_64): manylinux wheels up to 2_34.
MWAA_PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(34, 16, -1)),
    "manylinux2014_x86_64",
)


def platform_args(target: Target) -> list[str]:
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", target.python]
    args += ["--abi", target.abi]
    for platform in MWAA_PLATFORMS:
        args += ["--platform", platform]
    return args


def wheelhouse_plan(target: Target) -> dict[str, Any]:
    """What the wheelhouse must hold: exact pins per folder, for which interpreter."""
    image = read_pins(target.image_packages)
    requirements = read_pins(target.requirements)
    for extra in target.compose_extras:
        requirements[extra] = image[extra]
    return {
        "python": target.python,
        "platforms": list(MWAA_PLATFORMS),
        "constraints": hashlib.sha256(target.constraints.read_bytes()).hexdigest(),
        "requirements": [f"{name}=={version}" for name, version in sorted(requirements.items())],
        "dbt": [f"{name}=={version}" for name, version in sorted(dbt_wheels(target).items())],
    }


def dbt_wheels(target: Target) -> dict[str, str]:
    """The dbt venv's wheels: its lock, plus the target's extras at the constraints' pins."""
    constraints = read_pins(target.constraints)
    return {**read_pins(DBT_LOCK), **{extra: constraints[extra] for extra in target.dbt_extras}}


def wheel_pins(folder: Path) -> dict[str, str]:
    from packaging.utils import parse_wheel_filename

    pins = {}
    for wheel in folder.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        pins[normalize(name)] = str(version)
    return pins


def _missing_wheels(folder: Path, pins: list[str]) -> list[str]:
    from packaging.version import Version

    have = wheel_pins(folder) if folder.is_dir() else {}
    missing = []
    for pin in pins:
        name, version = pin.split("==")
        if name not in have or Version(have[name]) != Version(version):
            missing.append(pin)
    return missing


def ensure_wheelhouse(target: Target) -> Path:
    """The target's wheelhouse, downloaded from PyPI for MWAA's platform unless already cached.

    Laid out as plugins.zip's ``wheels/``: ``requirements/``, ``dbt/`` and the constraints."""
    plan = wheelhouse_plan(target)
    house = target.wheelhouse
    for part in ("requirements", "dbt"):
        folder, stamp = house / part, house / f".{part}.json"
        wanted = {key: plan[key] for key in ("python", "platforms", "constraints", part)}
        if (
            stamp.is_file()
            and json.loads(stamp.read_text()) == wanted
            and not _missing_wheels(folder, plan[part])
        ):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        print(
            f"wheelhouse: downloading {len(plan[part])} {part} wheels for Airflow {target.airflow} "
            f"(CPython {target.python}, manylinux x86_64) into {folder}",
            flush=True,
        )
        download = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
                *("--disable-pip-version-check", "--dest", str(folder)),
                *platform_args(target),
                *plan[part],
            ],
            capture_output=True,
            text=True,
        )
        if download.returncode != 0:
            raise BundleError(f"Downloading the {part} wheels failed:\n{download.stderr[-3000:]}")
        missing = _missing_wheels(folder, plan[part])
        if missing or len(list(folder.iterdir())) != len(plan[part]):
            raise BundleError(f"The {part} wheelhouse does not hold exactly {plan[part]}")
        stamp.write_text(json.dumps(wanted, indent=1))
    for stale in house.glob("constraints-*.txt"):
        stale.unlink()
    shutil.copy2(target.constraints, house / target.constraints_in_bundle)
    return house
