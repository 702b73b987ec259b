"""Where a failed load's defect is: the line, its text and what to do, for the error message.

PostgreSQL names the line where the failing row ends (for an unclosed quote, where the file
ends) or no line at all (Aurora's import), and a duplicate key's first row not at all: the
object is read again to find the true lines. Only a failed load comes here.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import TYPE_CHECKING, Any, NamedTuple

from psycopg2 import errorcodes

from movielens_pipeline.archive import not_utf8, physical_lines, quoted_line
from movielens_pipeline.tables import Table

if TYPE_CHECKING:
    import psycopg2
    from psycopg2.extensions import connection as PgConnection

log = logging.getLogger(__name__)

EMPTY = "is empty (0 bytes): not even the header line is there"
HEADER_ONLY = (
    " at line 2",
    "the object holds a header and no rows: line 2, the first row, is missing",
)
# The first line of a COPY error's context: "COPY ratings, line 3[, column x: "value"]". For a
# row that spans lines (an open quote) PostgreSQL names the line where the row ends.
_COPY_CONTEXT = re.compile(r"^COPY [^,]+, (line (\d+)[^\r\n]*)", re.MULTILINE)
# A context that already quotes the whole row: 'line 2: "1,1,7,964982703"'.
_QUOTES_ROW = re.compile(r'^line \d+: "')
# A unique violation's DETAIL: "Key (user_id, movie_id)=(1, 1) already exists."
_DUPLICATE_KEY = re.compile(r"^Key \([^)]*\)=\((.*)\) already exists\.?$", re.DOTALL)


def failure_message(
    table: Table,
    source: str,
    where: str,
    what: str,
    todo: str,
    lines: dict[int, bytes] | None = None,
) -> str:
    """The message of a failed load; ``lines`` are quoted, shortened: {line number: bytes}."""
    reads = "".join(
        f" Line {number} reads {quoted_line(text)}."
        for number, text in sorted((lines or {}).items())
    )
    return (
        f"Loading {table.qualified_name} from {source} failed{where}: {what}.{reads} "
        f"The load was rolled back and the previous rows are intact; {todo}."
    )


def describe_failure(
    connection: PgConnection,
    table: Table,
    s3_client: Any,
    bucket: str,
    key: str,
    error: psycopg2.Error,
) -> str:
    source = f"s3://{bucket}/{key}"
    diag = error.diag
    message = (diag.message_primary or str(error)).strip()
    if connection.closed:
        return (
            f"Loading {table.qualified_name} from {source} failed: the database connection "
            f"was lost during the load ({message}). The server rolls back an unfinished "
            "transaction, so the previous rows are intact; rerun the load once the database "
            "is reachable."
        )
    context = _COPY_CONTEXT.search(diag.context or "")
    where = f" at {context.group(1)}" if context else ""
    detail = (diag.message_detail or "").strip()
    what = f"{message}: {detail.rstrip('.')}" if detail else message
    todo = "fix the file and rerun"
    lines: dict[int, bytes] = {}
    if diag.sqlstate == errorcodes.BAD_COPY_FILE_FORMAT and "unterminated" in message:
        # PostgreSQL names the line where the file ends, not where the quote opened.
        record = locate(_unclosed_record, s3_client, bucket, key)
        if record:
            where = f" at line {record.first}"
            what = (
                f"{message}: the quote opened on line {record.first} is never closed, so every "
                "line after it was read as one field"
            )
            todo = f"close the quote on line {record.first} (or double it) and rerun"
            lines = {record.first: record.text}
    elif diag.sqlstate == errorcodes.UNIQUE_VIOLATION:
        duplicate = _DUPLICATE_KEY.match(detail)
        todo = "keep one row per key in the file and rerun"
        # PostgreSQL names the second row at most: find both rows in the object.
        found = duplicate and locate(_lines_with_key, s3_client, bucket, key, table, duplicate[1])
        if found and len(found) == 2:
            first, second = found
            where = f" at line {second}"
            what = f"{what}; line {second} repeats the key of line {first}"
            todo = f"keep one row per key in the file (one of lines {first} and {second}) and rerun"
            lines = locate(_line_texts, s3_client, bucket, key, set(found)) or {}
    elif diag.sqlstate == errorcodes.CHARACTER_NOT_IN_REPERTOIRE and not context:
        # Aurora's import names no line: the first line that is not UTF-8 is the one.
        found = locate(_first_line_not_utf8, s3_client, bucket, key)
        if found:
            where = f" at line {found[0]}"
            todo = f"save line {found[0]} as UTF-8 and rerun"
            lines = {found[0]: found[1]}
    elif context:
        reported = int(context[2])
        record = locate(_record_ending_at, s3_client, bucket, key, reported)
        if record and record.last > record.first:
            where = f" at line {record.first}"
            what = (
                f"{what}: the quote opened on line {record.first} closes only on line "
                f"{record.last}, so lines {record.first}-{record.last} were read as one row"
            )
            todo = f"close the quote on line {record.first} (or double it) and rerun"
            lines = {record.first: record.text}
        else:
            if diag.sqlstate == errorcodes.CHARACTER_NOT_IN_REPERTOIRE:
                todo = f"save line {reported} as UTF-8 and rerun"
            else:
                todo = f"fix line {reported} of the file and rerun"
            if record and not _QUOTES_ROW.match(context[1]):
                lines = {record.first: record.text}
    return failure_message(table, source, where, what, todo, lines)


def locate(find: Callable[..., Any], s3_client: Any, bucket: str, key: str, *args: Any) -> Any:
    """Run ``find`` on the object's body; ``None`` when it cannot be read again."""
    try:
        with closing(s3_client.get_object(Bucket=bucket, Key=key)["Body"]) as body:
            return find(body, *args)
    except Exception as error:  # the load's own error is the one to report
        log.warning("Could not read s3://%s/%s again to locate the failure: %s", bucket, key, error)
        return None


class _Record(NamedTuple):
    """One row of the object as PostgreSQL's CSV COPY reads it."""

    first: int  # the line it starts on
    last: int  # the line it ends on: the "line N" of PostgreSQL's COPY error
    text: bytes  # its first line
    closed: bool  # False: a quote is still open where the object ends


def _records(body: Any) -> Iterator[_Record]:
    """The object's rows, split as PostgreSQL's CSV COPY splits them: a newline ends a row
    unless a quote is open, and every quote toggles (a doubled quote toggles twice)."""
    quoted, first, number, text = False, 1, 0, b""
    for number, line in enumerate(physical_lines(body), 1):
        if not quoted:
            first, text = number, line
        quoted ^= line.count(b'"') % 2 == 1
        if not quoted:
            yield _Record(first, number, text, True)
    if quoted:
        yield _Record(first, number, text, False)


def _unclosed_record(body: Any) -> _Record | None:
    """The row whose quote is still open where the object ends."""
    last = deque(_records(body), maxlen=1)
    return last[0] if last and not last[0].closed else None


def _record_ending_at(body: Any, line: int) -> _Record | None:
    """The row that PostgreSQL's "line N" names: the first one ending on or after it."""
    return next((record for record in _records(body) if record.last >= line), None)


def last_line(body: Any) -> tuple[int, bytes] | None:
    """The object's last line and its number."""
    last = deque(enumerate(physical_lines(body), 1), maxlen=1)
    return last[0] if last else None


def _first_line_not_utf8(body: Any) -> tuple[int, bytes] | None:
    """The object's first line that is not UTF-8, and its number."""
    return next(
        ((number, line) for number, line in enumerate(physical_lines(body), 1) if not_utf8(line)),
        None,
    )


def _line_texts(body: Any, numbers: set[int]) -> dict[int, bytes]:
    """The text of the lines numbered ``numbers``."""
    texts = {}
    for number, line in enumerate(physical_lines(body), 1):
        if number in numbers:
            texts[number] = line
            if len(texts) == len(numbers):
                break
    return texts


def _lines_with_key(body: Any, table: Table, rendered: str) -> list[int]:
    """The lines of the first two rows whose primary key PostgreSQL renders as ``rendered``
    (the values in a duplicate key's DETAIL, e.g. ``1, 1``)."""
    positions = [table.column_names.index(name) for name in table.primary_key]
    reader = csv.reader(io.TextIOWrapper(body, encoding="utf-8", errors="replace", newline=""))
    next(reader, None)
    lines: list[int] = []
    start = reader.line_num + 1
    for row in reader:
        if (
            len(row) == len(table.columns)
            and ", ".join(_as_rendered(table, row, position) for position in positions) == rendered
        ):
            lines.append(start)
            if len(lines) == 2:
                break
        start = reader.line_num + 1
    return lines


def _as_rendered(table: Table, row: list[str], position: int) -> str:
    """A CSV value as PostgreSQL prints it back (integers lose spaces and leading zeros)."""
    value = row[position]
    if table.columns[position].sql_type == "integer":
        try:
            return str(int(value))
        except ValueError:
            return value
    return value
