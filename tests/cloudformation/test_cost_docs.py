"""The dollar figures the documents state, recomputed from cost/ (the templates and the price
file, as `make cost` computes them): docs/cost.md (its tables and its prose), the teardown
table of cloudformation/README.md and the READMEs' one-line totals. A figure that drifts from
the computation fails, and so does a figure no check here recomputes. Amounts inside double
quotes are quotations of a source, not figures of this estate, and are left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cost.estimate import (
    TRIAL_PARAMETERS,
    Line,
    idle_lines,
    prices_for,
    read_parameter_file,
    resolved_templates,
    run_cost,
)
from cost.templates import CFN_DIR, REPO, load_template

COST_MD = REPO / "docs" / "cost.md"
CFN_README = CFN_DIR / "README.md"
README = REPO / "README.md"
AMOUNT = re.compile(r"\$\d[\d,]*(?:\.\d+)?")
RUN_SIZES = {"ml-latest-small": 100836, "32M ratings": 32_000_000}
PRICES = prices_for("us-east-1")
# The estates the documents speak of: the defaults, the trial estate, and the defaults with
# one parameter changed.
ESTATES = {
    "defaults": {},
    "trial": read_parameter_file(TRIAL_PARAMETERS),
    "provisioned": {"WarehouseKind": "provisioned"},
    "endpoints": {"CreateInterfaceEndpoints": "true"},
}


@cache
def templates(estate: str) -> dict[str, dict[str, Any]]:
    return resolved_templates(ESTATES[estate])


@cache
def lines(estate: str) -> tuple[Line, ...]:
    return tuple(idle_lines(templates(estate), PRICES))


def total(estate: str) -> float:
    return sum(li.usd for li in lines(estate))


def resource(estate: str, name: str, item: str | None = None) -> float:
    kept = [li for li in lines(estate) if li.resource == name and item in (None, li.item)]
    assert kept, f"{estate}: no line of {name} {item or ''}"
    return sum(li.usd for li in kept)


def item(estate: str, name: str, count: int | None = None) -> float:
    kept = [li for li in lines(estate) if li.item == name]
    assert kept and count in (None, len(kept)), f"{estate}: {len(kept)} lines '{name}'"
    return sum(li.usd for li in kept)


def price(key: str, variant: str | None = None) -> float:
    return PRICES.get(key, variant)[0]


def endpoint_month() -> float:
    """One interface endpoint a month (each is priced alike: two AZs)."""
    each = {li.usd for li in lines("endpoints") if li.item == "interface endpoint"}
    assert len(each) == 1, each
    return each.pop()


def nat_and_address() -> float:
    return resource("defaults", "NatGateway", "gateway-hours") + resource("defaults", "NatEip")


def number(text: str) -> float:
    return float(text.replace(",", ""))


def unquoted_amounts(text: str) -> Iterator[re.Match]:
    quoted = [m.span() for m in re.finditer(r'"[^"\n]*"', text)]
    for match in AMOUNT.finditer(text):
        if not any(start < match.start() < end for start, end in quoted):
            yield match


class Figures:
    """The dollar amounts of one document, each ticked off by the check that recomputes it."""

    def __init__(self, path: Path, text: str | None = None) -> None:
        self.path = path
        self.text = path.read_text(encoding="utf-8") if text is None else text
        self.unchecked = {m.start(): m.group(0) for m in unquoted_amounts(self.text)}

    def check(self, pattern: str, *expected: float, digits: int = 2) -> None:
        """`pattern`, where each AMT stands for an amount, appears once; each amount equals its
        expected value rounded to `digits`."""
        found = list(re.finditer(pattern.replace("AMT", f"({AMOUNT.pattern})"), self.text))
        assert len(found) == 1, f"{self.path.name}: {len(found)} matches of {pattern!r}"
        match = found[0]
        assert len(match.groups()) == len(expected), pattern
        for index, want in enumerate(expected, 1):
            self.tick(match.start(index), match.group(index), want, digits)

    def tick(self, start: int, amount: str, want: float, digits: int = 2) -> None:
        assert amount.startswith("$"), amount
        stated = number(amount[1:])
        # Rounded either way at a tie: the sum of rounded cents can land on one.
        assert abs(stated - want) <= 0.5 * 10**-digits + 1e-9, (
            f"{self.path.name}: {amount} is stated where cost/ computes {want:.4f}"
            f" ({self.line_of(start)!r})"
        )
        self.unchecked.pop(start, None)

    def line_of(self, offset: int) -> str:
        return self.text[self.text.rfind("\n", 0, offset) + 1 : self.text.find("\n", offset)]

    def table(self, heading: str) -> Iterator[list[tuple[int, str]]]:
        """Each body row of the first table after `heading`: its cells as (offset, text)."""
        start = self.text.index(heading)
        rows = re.finditer(r"^\|(.*)\|$", self.text[start:], re.M)
        body = list(rows)[2:]  # past the header and the |---| line
        previous_end = None
        for row in body:
            if previous_end is not None and row.start() != previous_end + 1:
                break  # the table ended
            previous_end = row.end()
            offset = start + row.start(1)
            cells, position = [], offset
            for cell in row.group(1).split("|"):
                cells.append((position, cell))
                position += len(cell) + 1
            yield cells

    def assert_all_checked(self) -> None:
        left = [f"{a} in {self.line_of(s)!r}" for s, a in sorted(self.unchecked.items())]
        assert not left, f"{self.path.name}: no check recomputes " + "; ".join(left)


# --------------------------------------------------------------- the teardown tables
# What each named part of a step's saving is, in the defaults estate (or, said of
# "provisioned", the provisioned one).
TEARDOWN_PARTS: list[tuple[str, Callable[[re.Match], float]]] = [
    (r"\bhost\b", lambda _: resource("defaults", "OperatorInstance")),
    (r"\bkey\b", lambda _: resource("defaults", "AlarmTopicKey")),
    (r"^(\d+) alarms$", lambda m: item("defaults", "alarm", count=int(m.group(1)))),
    (r"^mw1\.small$", lambda _: resource("defaults", "MwaaEnvironment", "environment")),
    (r"second scheduler", lambda _: item("defaults", "schedulers beyond the first")),
    (r"^db\.t4g\.large$", lambda _: resource("defaults", "AuroraWriter", "compute")),
    (r"^NAT gateway \+ data$", lambda _: resource("defaults", "NatGateway", "gateway-hours")),
    (r"\baddress$", lambda _: resource("defaults", "NatEip")),
    (r"\bprovisioned\b", lambda _: item("provisioned", "nodes")),
]


def check_teardown(figures: Figures, heading: str) -> None:
    """Each step ends its stack's whole idle cost (the first amount; "nothing" where every
    billed resource is retained), and each named part of it is that part's cost."""
    steps = list(figures.table(heading))
    assert [cells[1][1].strip() for cells in steps] == [
        "operations",
        "mwaa",
        "warehouse-integration",
        "database",
        "storage",
        "network",
    ]
    for cells in steps:
        template = cells[1][1].strip().replace("-", "_")
        at, ends = cells[2]
        if ends.strip().startswith("nothing"):
            stack = {li.resource for li in lines("defaults") if li.template == template}
            raw = load_template(CFN_DIR / f"{template}.yaml")["Resources"]
            assert stack and all(raw[r].get("DeletionPolicy") == "Retain" for r in stack)
            continue
        first = AMOUNT.search(ends)
        assert first, f"{template}: no amount in {ends!r}"
        figures.tick(
            at + first.start(),
            first.group(0),
            sum(li.usd for li in lines("defaults") if li.template == template),
        )
        rest_at = at + first.end()
        rest = ends[first.end() :]
        for segment in re.finditer(r"[^,;()]+", rest):
            amount = AMOUNT.search(segment.group(0))
            if not amount:
                continue
            label = " ".join(
                (segment.group(0)[: amount.start()] + segment.group(0)[amount.end() :])
                .replace(":", " ")
                .split()
            )
            matches = [(p, f) for p, f in TEARDOWN_PARTS if re.search(p, label)]
            assert len(matches) == 1, f"{template}: cannot tell what {label!r} is"
            pattern, compute = matches[0]
            figures.tick(
                rest_at + segment.start() + amount.start(),
                amount.group(0),
                compute(re.search(pattern, label)),
            )


# --------------------------------------------------------------------- the tests
PRICE_ROWS = {
    "MWAA mw1.small environment-hour": [("mwaa_environment_hour", "mw1.small")],
    "MWAA mw1.micro environment-hour": [("mwaa_environment_hour", "mw1.micro")],
    "MWAA extra worker-hour (small)": [("mwaa_additional_worker_hour", "mw1.small")],
    "MWAA extra scheduler-hour (small)": [("mwaa_additional_scheduler_hour", "mw1.small")],
    "MWAA metadata GB-month": [("mwaa_metadata_storage_gb_month", None)],
    "Aurora db.t4g.large / db.t4g.medium hour": [
        ("aurora_instance_hour", "db.t4g.large"),
        ("aurora_instance_hour", "db.t4g.medium"),
    ],
    "Aurora Serverless v2 ACU-hour": [("aurora_serverless_acu_hour", None)],
    "Aurora storage GB-month": [("aurora_storage_gb_month", None)],
    "Aurora I/O per million": [("aurora_io_million", None)],
    "Redshift Serverless RPU-hour": [("redshift_serverless_rpu_hour", None)],
    "Redshift managed storage GB-month": [("redshift_managed_storage_gb_month", None)],
    "Redshift ra3.large node-hour": [("redshift_node_hour", "ra3.large")],
    "NAT gateway hour / GB": [("nat_gateway_hour", None), ("nat_gateway_gb", None)],
    "public IPv4 address-hour": [("public_ipv4_hour", None)],
    "interface endpoint AZ-hour": [("interface_endpoint_az_hour", None)],
    "EC2 t4g.small hour, gp3 GB-month, detailed monitoring": [
        ("ec2_instance_hour", "t4g.small"),
        ("ebs_gp3_gb_month", None),
        ("ec2_detailed_monitoring_month", None),
    ],
    "S3 Standard GB-month": [("s3_standard_gb_month", None)],
    "Secrets Manager secret-month": [("secret_month", None)],
    "KMS customer managed key-month": [("kms_key_month", None)],
    "CloudWatch alarm-month": [("cloudwatch_alarm_month", None)],
    "CloudWatch Logs ingestion GB": [("cloudwatch_logs_ingest_gb", None)],
}


def check_cost_md(doc: Figures) -> None:
    """Every figure of docs/cost.md (or of a changed copy of it)."""
    # The figures: each estate's idle month and one run at each size.
    estates = list(doc.table("## The figures"))
    assert [c[0][1].split()[0] for c in estates] == ["defaults", "trial"]
    for cells in estates:
        estate = cells[0][1].split()[0]
        wanted = [total(estate)] + [
            run_cost(templates(estate), PRICES, size).total for size in RUN_SIZES.values()
        ]
        for (at, cell), want in zip(cells[1:4], wanted, strict=True):
            amount = AMOUNT.search(cell)
            doc.tick(at + amount.start(), amount.group(0), want)
    doc.check(
        r"mw1\.small AMT \+ a second scheduler AMT; mw1\.micro\s+AMT\)",
        resource("defaults", "MwaaEnvironment", "environment"),
        item("defaults", "schedulers beyond the first"),
        resource("trial", "MwaaEnvironment", "environment"),
    )
    doc.check(
        r"Aurora \(AMT provisioned; AMT at 0\.5 ACU\)",
        resource("defaults", "AuroraWriter"),
        resource("trial", "AuroraWriter"),
    )
    doc.check(r"the NAT gateway with its\s+address \(AMT\)", nat_and_address())
    doc.check(r"adds AMT a\s+month of nodes", item("provisioned", "nodes"))
    endpoints = [li for li in lines("endpoints") if li.item == "interface endpoint"]
    doc.check(
        r"adds AMT per endpoint \(5: AMT\)",
        endpoint_month(),
        sum(li.usd for li in endpoints),
    )
    assert len(endpoints) == 5
    # The price table: each row's prices, in order, and whether the file marks them assumed.
    for cells in doc.table("## Prices and their sources"):
        label = cells[0][1].strip()
        assert label in PRICE_ROWS, f"a price row the test does not know: {label!r}"
        at, cell = cells[1]
        stated = list(AMOUNT.finditer(cell))
        keys = PRICE_ROWS[label]
        assert len(stated) == len(keys), (label, cell)
        for amount, (key, variant) in zip(stated, keys, strict=True):
            doc.tick(at + amount.start(), amount.group(0), price(key, variant), digits=6)
        status = {PRICES.get(key, variant)[1] for key, variant in keys}
        assert cells[3][1].strip().startswith("assumed" if status == {True} else "quoted"), label
    four_rpu = 4 * price("redshift_serverless_rpu_hour")
    doc.check(r"\(AMT/hour for 4 RPU\)", four_rpu)
    doc.check(r"from AMT an hour", four_rpu)
    # The trial estate's reasons.
    doc.check(r"9 x AMT = AMT a month", endpoint_month(), 9 * endpoint_month())
    doc.check(
        r"the NAT gateway and its address\s+AMT \(\+ AMT a GB\)",
        nat_and_address(),
        price("nat_gateway_gb"),
        digits=6,
    )
    doc.check(r"an hour of t4g\.small is about AMT", price("ec2_instance_hour", "t4g.small"))
    # What still bills while paused.
    doc.check(
        r"all of it \(AMT \+ three secrets AMT \+ AMT \+ AMT\)",
        nat_and_address(),
        item("defaults", "secret", count=2) + item("defaults", "RDS-managed master secret"),
        resource("defaults", "AlarmTopicKey"),
        item("defaults", "alarm"),
    )
    check_teardown(doc, "## Teardown, and the cost each step ends")
    doc.assert_all_checked()


def test_every_figure_of_docs_cost_md_is_what_cost_computes() -> None:
    check_cost_md(Figures(COST_MD))


def test_every_figure_of_the_cloudformation_readme_is_what_cost_computes() -> None:
    doc = Figures(CFN_README)
    check_teardown(doc, "## Teardown (reverse order, with care)")
    doc.check(
        r"about AMT against AMT a month",
        total("defaults"),
        total("trial"),
        digits=0,
    )
    doc.assert_all_checked()


def test_the_readme_cost_totals_are_what_cost_computes() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("- What it costs: `make cost`")
    paragraph = text[start : text.index("\n\n", start)]
    doc = Figures(README, paragraph)
    doc.check(r"about AMT against\s+AMT a month", total("defaults"), total("trial"), digits=0)
    doc.assert_all_checked()


@pytest.mark.parametrize(
    "drift",
    [("$398.95", "$398.96"), ("| $267.56 |", "| $267.55 |"), ("$0.055 |", "$0.056 |")],
)
def test_a_figure_that_drifts_fails(drift: tuple[str, str]) -> None:
    """The check itself: docs/cost.md with one figure changed by a cent no longer passes."""
    old, new = drift
    text = COST_MD.read_text(encoding="utf-8")
    assert old in text
    changed = Figures(COST_MD, text.replace(old, new, 1))
    with pytest.raises(AssertionError, match="is stated where cost/ computes"):
        check_cost_md(changed)


def test_a_figure_no_check_recomputes_fails() -> None:
    text = COST_MD.read_text(encoding="utf-8")
    added = text.replace("## Stop paying\n", "## Stop paying\n\nA pause saves $12.34.\n", 1)
    with pytest.raises(AssertionError, match=r"no check recomputes \$12\.34"):
        check_cost_md(Figures(COST_MD, added))
