"""`python -m cost`: the estate's monthly idle cost and one run's cost, two estates side by side.

python -m cost                                  # the defaults beside the trial estate
python -m cost --parameters FILE [Key=Value ...]  # the defaults beside that estate
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from cost.estimate import (
    REPO,
    TRIAL_PARAMETERS,
    USAGE,
    Line,
    idle_lines,
    prices_for,
    read_parameter_file,
    resolved_templates,
    run_cost,
)

RUN_SIZES = (100836, 32_000_000)
DETAIL, AMOUNT = 20, 9


def _cell(line: Line | None) -> str:
    if line is None:
        return f"{'-':<{DETAIL}} {'-':>{AMOUNT}} "
    mark = "*" if line.assumed else " "
    return f"{line.detail[:DETAIL]:<{DETAIL}} {line.usd:>{AMOUNT}.2f}{mark}"


def _relative(path: Path) -> str:
    return (
        str(path.resolve().relative_to(REPO)) if path.resolve().is_relative_to(REPO) else str(path)
    )


def main(argv: list[str] | None = None) -> int:
    """Print both estates; exit status 0."""
    parser = argparse.ArgumentParser(prog="python -m cost", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--region", default="us-east-1", help="price file cost/prices/<region>.yaml"
    )
    parser.add_argument("--parameters", type=Path, help="Key=Value file, as deploy.sh --parameters")
    parser.add_argument("overrides", nargs="*", metavar="Key=Value", help="as after deploy.sh --")
    args = parser.parse_args(argv)

    overrides = dict(o.split("=", 1) for o in args.overrides if "=" in o)
    if len(overrides) != len(args.overrides):
        parser.error("overrides must be Key=Value")
    if args.parameters or overrides:
        other = read_parameter_file(args.parameters) if args.parameters else {}
        other.update(overrides)
        label = args.parameters.stem if args.parameters else "overrides"
        source = _relative(args.parameters) if args.parameters else "after --"
    else:
        other, label, source = (
            read_parameter_file(TRIAL_PARAMETERS),
            "trial",
            _relative(TRIAL_PARAMETERS),
        )

    prices = prices_for(args.region)
    today = dt.date.today()
    estates = {"defaults": resolved_templates({}), label: resolved_templates(other)}
    print(
        f"Prices: {_relative(prices.path)} ({prices.data['region']}, {prices.data['currency']}), "
        f"read {prices.data['read_on']}: {prices.age_days(today)} days old on {today}. "
        "* = assumed price or usage (see the price file and the list below)."
    )
    print("defaults: the templates' defaults")
    print(f"{label}: {source}: " + " ".join(f"{k}={v}" for k, v in other.items()))

    lines = {name: idle_lines(tpls, prices) for name, tpls in estates.items()}
    keyed = {
        name: {(li.template, li.resource, li.item): li for li in ls} for name, ls in lines.items()
    }
    order = list(dict.fromkeys(k for ls in keyed.values() for k in ls))
    head = f"{'stack':<22} {'resource':<30} {'item':<30}"
    print(
        f"\nMonthly cost, idle ({prices.hours:g} h)\n{head} "
        + " ".join(f"{n:<{DETAIL + AMOUNT + 2}}" for n in estates)
    )
    for key in order:
        template, resource, item = key
        cells = " ".join(_cell(keyed[n].get(key)) for n in estates)
        print(f"{template:<22} {resource[:30]:<30} {item[:30]:<30} {cells}")
    totals = " ".join(
        f"{'':<{DETAIL}} {sum(li.usd for li in lines[n]):>{AMOUNT}.2f} " for n in estates
    )
    print(f"{'TOTAL a month':<84} {totals}")

    print("\nOne run of both DAGs (load, zero-ETL catch-up, dbt, docs) on the idle estate")
    for ratings in RUN_SIZES:
        runs = {n: run_cost(tpls, prices, ratings) for n, tpls in estates.items()}
        measured = next(iter(runs.values())).measured
        how = "hop times measured" if measured else "hop times scaled from 25M measured (assumed)"
        print(f"{ratings:,} ratings ({how})")
        items = list(dict.fromkeys(i for r in runs.values() for i in r.items))
        for item in items:
            cells = " ".join(
                f"{'':<{DETAIL}} {runs[n].items[item]:>{AMOUNT}.4f} "
                if item in runs[n].items
                else f"{'':<{DETAIL}} {'-':>{AMOUNT}} "
                for n in estates
            )
            print(f"  {item:<82} {cells}")
        totals = " ".join(f"{'':<{DETAIL}} {runs[n].total:>{AMOUNT}.4f} " for n in estates)
        print(f"  {'total':<82} {totals}")

    print("\nAssumed usage (no template or measurement states it):")
    for key, (value, what) in USAGE.items():
        print(f"  {key} = {value:g}: {what}")
    print(
        "Measured: hop times of `make bench-scale` (docs/images/scale-time-per-hop.json), on the "
        "local stand-ins, taken to hold on AWS. Not counted: data transfer out, free tiers, "
        "taxes, snapshots kept after a teardown."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
