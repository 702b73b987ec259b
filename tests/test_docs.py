"""The operations docs (docs/*.md) name only what exists: make targets, relative links and
their anchors, repository paths, DAG ids, task ids and the identifiers they quote.

Fast and offline: it reads files, starts nothing.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from movielens_pipeline import names

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
DBT_MODELS = REPO / "dbt" / "movielens_redshift" / "models"
SETTINGS = REPO / "plugins" / "movielens_pipeline" / "settings.py"

# Where the identifiers the docs quote must appear: the code and configuration, not prose.
SOURCE_GLOBS = (
    "dags/*.py",
    "plugins/movielens_pipeline/*.py",
    "localdev/*.py",
    "localdev/*.sh",
    "localdev/airflow.env",
    "benchmarks/*.py",
    "dbt/movielens_redshift/**/*.sql",
    "dbt/movielens_redshift/**/*.yml",
    "cloudformation/*.yaml",
    "cloudformation/*.sh",
    "cloudformation/scripts/*.sh",
    "requirements*.txt",
    "Makefile",
    "startup.sh",
    "docker-compose.yaml",
)
# Names the docs take from AWS's, PostgreSQL's or pip's documentation (each doc cites the
# page), or define themselves (a shell variable of procedures.md), not found in the code.
EXTERNAL_NAMES = {
    # Redshift SVV_INTEGRATION / SVV_INTEGRATION_TABLE_STATE columns and states
    "last_replicated_checkpoint",
    "table_rows",
    "table_size",
    "last_updated_timestamp",
    "PendingDbConnectState",
    "SchemaDiscoveryState",
    "CdcRefreshState",
    "ErrorState",
    "ResyncInitiated",
    "QUERY_ALL_STATES",
    "SYS_INTEGRATION_TABLE_STATE_CHANGE",
    # MWAA: CloudWatch log streams, the InvokeRestApi answer
    "startup_script_execution_ip",
    "requirements_install_ip",
    "RestApiResponse",
    # RDS DescribeDBClusters fields (docs/backup-and-recovery.md)
    "EarliestRestorableTime",
    "LatestRestorableTime",
    # pip
    "ResolutionImpossible",
    # defined in docs/procedures.md
    "REDSHIFT_DB",
}
# Task ids Cosmos makes from the dbt project (dbt_config.movielens_dbt_task_group).
DBT_GROUP = "dbt_movielens"
COSMOS_TASK = re.compile(rf"^{DBT_GROUP}\.(?:(\w+)\.(?:run|test)|(\w+)_model_build)$")
COSMOS_FIXED = {DBT_GROUP, f"{DBT_GROUP}.*", f"{DBT_GROUP}.dbt_producer_watcher"}
# Generated folders: paths under them exist only after a build or a run.
GENERATED = {".local", ".venv", "build"}

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)


def _parts(doc: Path) -> tuple[str, str, list[str]]:
    """(prose without fenced blocks, the fenced blocks' text, the prose's inline code spans)."""
    text = doc.read_text(encoding="utf-8")
    fenced = "\n".join(FENCE.findall(text))
    prose = FENCE.sub("", text)
    return prose, fenced, INLINE.findall(prose)


@cache
def makefile_targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z0-9][a-z0-9-]*)\s*:(?!=)", makefile, re.M))


@cache
def dag_ids() -> set[str]:
    """The DAG ids names.py declares (test_dagbag checks that they are the DAGs')."""
    return {value for key, value in vars(names).items() if key.endswith("_DAG_ID")}


@cache
def task_ids() -> set[str]:
    """The task ids names.py declares (test_dagbag checks that they are the DAGs')."""
    return {value for key, value in vars(names).items() if key.endswith("_TASK_ID")}


@cache
def dbt_models() -> set[str]:
    return {path.stem for path in DBT_MODELS.rglob("*.sql")}


@cache
def source_text() -> str:
    return "\n".join(
        path.read_text(encoding="utf-8", errors="replace")
        for pattern in SOURCE_GLOBS
        for path in REPO.glob(pattern)
        if path.is_file()
    )


def slugs(doc: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    seen: Counter[str] = Counter()
    anchors = set()
    for heading in HEADING.findall(FENCE.sub("", doc.read_text(encoding="utf-8"))):
        plain = re.sub(r"[`*]|(?<!\w)_+|_+(?!\w)", "", heading)  # code and emphasis marks
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", plain)
        slug = re.sub(r"[^\w\- ]", "", plain.strip().lower()).replace(" ", "-")
        anchors.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return anchors


def test_docs_exist_and_the_readme_links_them() -> None:
    assert {"README.md", "procedures.md", "monitoring.md", "troubleshooting.md"} <= {
        doc.name for doc in DOCS
    }
    assert "(docs/README.md)" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_make_targets_exist(doc: Path) -> None:
    prose, fenced, spans = _parts(doc)
    named = set(re.findall(r"\bmake ([a-z][a-z0-9-]*)", "\n".join([fenced, *spans])))
    missing = named - makefile_targets()
    assert not missing, f"{doc.name} names make targets the Makefile lacks: {sorted(missing)}"


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    prose, _, _ = _parts(doc)
    broken = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z]+:", target):  # http(s), mailto
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in slugs(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, f"{doc.name}: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_repository_paths_exist(doc: Path) -> None:
    """An inline `path/like/this` whose first part is a top-level entry of the repository."""
    _, _, spans = _parts(doc)
    top = {entry.name for entry in REPO.iterdir()} - GENERATED
    missing = []
    for span in spans:
        path = span.split("#")[0].rstrip("/")
        if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)+", path) or path.split("/")[0] not in top:
            continue
        if "/target/" in f"/{path}/" or "/logs/" in f"/{path}/":
            continue  # dbt's and Airflow's output folders
        if not (REPO / path).exists():
            missing.append(span)
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_dag_ids_exist(doc: Path) -> None:
    named = set(re.findall(r"\bdag_(?:movielens|dbt)\w*", doc.read_text(encoding="utf-8")))
    missing = named - dag_ids()
    assert not missing, f"{doc.name} names DAG ids that dags/ lacks: {sorted(missing)}"


def _is_task(span: str) -> bool:
    span = re.sub(r"\[[^\]]*\]$", "", span)  # a mapped task's `[index]`
    if span in task_ids() or span in COSMOS_FIXED:
        return True
    match = COSMOS_TASK.match(span)
    return bool(match) and (match.group(1) or match.group(2)) in dbt_models()


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_task_ids_exist(doc: Path) -> None:
    """Spans called a task (`x` task, task `x`) and every `dbt_movielens.*` span."""
    prose, _, spans = _parts(doc)
    called = re.findall(r"`([\w.\[\]*]+)`,? (?:task|watcher)|\btasks? `([\w.\[\]*]+)`", prose)
    named = {a or b for a, b in called} | {s for s in spans if s.startswith(f"{DBT_GROUP}.")}
    named = {s for s in named if "<" not in s}
    missing = sorted(s for s in named if not _is_task(s))
    assert not missing, f"{doc.name} names task ids the DAGs do not have: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_quoted_identifiers_exist_in_the_code(doc: Path) -> None:
    """Inline identifiers (snake_case or CamelCase: settings, XCom keys, columns, alarm
    parameters, exceptions) appear in the code or configuration, or are AWS's names."""
    _, _, spans = _parts(doc)
    identifiers = {
        span
        for span in spans
        if re.fullmatch(r"[A-Za-z_]\w*", span) and ("_" in span or re.search(r"[a-z][A-Z]", span))
    }
    missing = sorted(
        name
        for name in identifiers - EXTERNAL_NAMES
        if not re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", source_text())
    )
    assert not missing, f"{doc.name} quotes identifiers found nowhere in the code: {missing}"


# Every markdown page a user reads: the upload of the MWAA bundle has one recipe, `make deploy`
# (it builds the wheelhouse, the manifest and plugins.zip, checks them and uploads them); a
# hand-made upload misses the wheels requirements.txt installs from.
MARKDOWN = sorted({*REPO.glob("*.md"), *DOCS, *(REPO / "cloudformation").glob("*.md")})
S3_UPLOAD = re.compile(r"\baws\s+s3\s+(?:cp|sync|mv)\b|\baws\s+s3api\s+put-object\b")
BUNDLE_PART = re.compile(r"plugins\.zip|requirements[\w.-]*\.txt|startup\.sh|\bdags/|\bdbt/|mwaa")
MANUAL_ZIP = re.compile(r"\bzip\s+-\w*\s+[^\n]*plugins|\bzip\b[^\n]*\bplugins\.zip\b")


def upload_recipes(text: str) -> list[str]:
    """Shell lines (backslash continuations joined) that upload a part of the bundle by hand
    or build plugins.zip by hand."""
    found = []
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        if (S3_UPLOAD.search(line) and BUNDLE_PART.search(line)) or MANUAL_ZIP.search(line):
            found.append(line.strip())
    return found


def test_the_old_manual_upload_recipe_would_be_caught() -> None:
    old = """
#   aws s3 sync dags/ s3://data-handson-mds-mwaa-dev/dags/
#   (cd plugins && zip -qr ../plugins.zip movielens_pipeline -x '*__pycache__*')
#   for f in plugins.zip requirements.txt startup.sh; do aws s3 cp "$f" \\
#     s3://data-handson-mds-mwaa-dev/; done
"""
    assert len(upload_recipes(old)) == 3
    assert upload_recipes("aws s3 ls s3://data-handson-mds-raw-dev/movielens/") == []
    assert upload_recipes('make deploy MWAA_BUCKET="$MWAA_BUCKET"') == []


@pytest.mark.parametrize("doc", MARKDOWN, ids=[str(d.relative_to(REPO)) for d in MARKDOWN])
def test_the_bundle_is_uploaded_only_by_make_deploy(doc: Path) -> None:
    recipes = upload_recipes(doc.read_text(encoding="utf-8"))
    assert not recipes, f"{doc.name}: upload the bundle with `make deploy`, not {recipes}"


def test_the_deploy_recipes_use_make_deploy() -> None:
    for doc in (REPO / "README.md", REPO / "cloudformation" / "README.md"):
        assert re.search(r"^make deploy MWAA_BUCKET=", doc.read_text(), re.M), doc


def test_the_deploy_recipes_read_the_bucket_export_of_the_names_deployed() -> None:
    """The MWAA bucket export the recipes look up follows PROJECT_NAME and ENVIRONMENT_NAME,
    the names deploy.sh gives the stacks, so a second environment's recipe reads its own."""
    for doc in (REPO / "README.md", REPO / "cloudformation" / "README.md"):
        (query,) = re.findall(r'--query "(Exports\[[^"]*MwaaBucketName[^"]*)"', doc.read_text())
        expanded = subprocess.run(
            ["bash", "-c", f'printf %s "{query}"'],
            env={"PROJECT_NAME": "acme", "ENVIRONMENT_NAME": "stg"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert expanded == "Exports[?Name=='acme-stg-MwaaBucketName'].Value", doc


def test_the_readme_configuration_table_names_every_option_the_dags_read() -> None:
    """The [movielens] table in the README and settings.py name the same options."""
    read = set(re.findall(r'_(?:option|minutes)\("(\w+)"', SETTINGS.read_text()))
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| option |", readme.index("## Configuration")) :]
    table = table[: table.index("\n\n")]
    documented = {
        name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split("|")[1])
    }
    assert read and documented == read
