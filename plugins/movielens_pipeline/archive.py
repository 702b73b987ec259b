"""Get the MovieLens archive (download or local copy), verify it and read its CSVs."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from movielens_pipeline.compat import AirflowFailException
from movielens_pipeline.tables import TABLES, Table

log = logging.getLogger(__name__)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
# The archives this pipeline knows by name: the same four CSVs, the same columns. ml-25m and
# ml-32m carry more files (genome scores) that the pipeline ignores.
KNOWN_ARCHIVES = ("ml-latest-small", "ml-25m", "ml-32m")
# MD5 sums published by GroupLens beside each archive (files.grouplens.org/datasets/movielens/).
# Only sums read from GroupLens' own material are listed: ml-25m and ml-32m are downloaded
# and used without a checksum (a warning says so) until their published sums are added here.
PUBLISHED_MD5 = {
    # pragma: allowlist nextline secret - the checksum GroupLens publishes, not a secret
    "ml-latest-small": "31a303aabbc519bd33d025e44d6c2570",
}
_CHUNK = 1 << 20
# Download progress is logged every this many bytes (ml-25m and ml-32m are hundreds of MB).
PROGRESS_EVERY_BYTES = 16 << 20
# Seconds a connection attempt or a read may stall before the download fails.
DOWNLOAD_TIMEOUT_SECONDS = 15


class ArchiveError(RuntimeError):
    """The archive is missing, corrupt or not shaped like MovieLens."""


class GroupLensUnreachable(AirflowFailException):
    """The download could not start: no route, no DNS, refused or timed out. A retry of the
    task would not help, so it fails at once and says how to work offline."""


@dataclass(frozen=True)
class MovieLensArchive:
    """A verified archive (``.zip``) or an extracted folder holding the four CSVs."""

    name: str
    path: Path

    @contextmanager
    def open_csv(self, table: Table) -> Iterator[IO[bytes]]:
        """Open one table's CSV as a binary stream, wherever it lives."""
        if self.path.is_dir():
            csv_path = self.path / table.csv_file
            if not csv_path.is_file():
                raise ArchiveError(f"{csv_path} is missing: the folder must hold {table.csv_file}")
            with csv_path.open("rb") as stream:
                yield stream
            return
        with zipfile.ZipFile(self.path) as archive:
            member = f"{self.name}/{table.csv_file}"
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise ArchiveError(
                    f"{self.path} has no {member}: is it the {self.name} archive?"
                ) from None
            with archive.open(info) as stream:
                yield stream


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_md5(name: str, archive: Path) -> None:
    expected = PUBLISHED_MD5.get(name)
    if expected is None:
        log.warning("No published MD5 known for %s; %s is not checksummed", name, archive)
        return
    actual = md5_of(archive)
    if actual != expected:
        raise ArchiveError(
            f"{archive} has MD5 {actual}, but GroupLens publishes {expected} for {name}: "
            "the file is corrupt or not that archive. Delete it and download again."
        )


def _download(name: str, destination: Path) -> None:
    url = GROUPLENS_URL.format(name=name)
    partial = destination.with_suffix(".part")
    destination.parent.mkdir(parents=True, exist_ok=True)
    log.info("Downloading %s to %s", url, destination)
    started = time.monotonic()
    try:
        # The URL is the fixed GroupLens address above, never user input.
        response = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS)  # noqa: S310
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise GroupLensUnreachable(
            f"Cannot download {name} from {url}: {reason}. Working offline? Point "
            "[movielens] archive_path (AIRFLOW__MOVIELENS__ARCHIVE_PATH; `make demo "
            "MOVIELENS_ARCHIVE=...`) at a local copy of the .zip or of its CSV folder; "
            "ml-latest-small ships with this repository in data/."
        ) from None
    try:
        with response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = reported = 0
            while chunk := response.read(min(_CHUNK, PROGRESS_EVERY_BYTES)):
                out.write(chunk)
                done += len(chunk)
                if done - reported >= PROGRESS_EVERY_BYTES:
                    _log_progress(name, done, total, started)
                    reported = done
        if total and done != total:
            raise ArchiveError(
                f"Download of {url} stopped at {done} of {total} bytes: the connection dropped. "
                "Run the task again; the partial file is not kept."
            )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if done != reported:
        _log_progress(name, done, total, started)
    partial.replace(destination)


def _log_progress(name: str, done: int, total: int, started: float) -> None:
    mib_per_s = done / (1 << 20) / max(time.monotonic() - started, 1e-6)
    if total:
        log.info(
            "%s: %.1f of %.1f MiB (%.0f%%, %.1f MiB/s)",
            name,
            done / (1 << 20),
            total / (1 << 20),
            100 * done / total,
            mib_per_s,
        )
    else:
        log.info("%s: %.1f MiB (size unknown, %.1f MiB/s)", name, done / (1 << 20), mib_per_s)


def fetch_archive(archive_name: str, archive_path: str, cache_dir: Path) -> MovieLensArchive:
    """The verified archive: ``archive_path`` when given, else the cached or downloaded one."""
    if archive_path:
        path = Path(archive_path)
        if path.is_file():
            _verify_md5(archive_name, path)
        elif not path.is_dir():
            raise ArchiveError(
                f"Local MovieLens copy {path} does not exist: point [movielens] archive_path "
                "at the .zip or at a folder holding the four CSVs"
            )
        return MovieLensArchive(archive_name, path)
    if archive_name not in KNOWN_ARCHIVES:
        raise ArchiveError(
            f"Unknown MovieLens archive {archive_name!r}: set [movielens] archive_name to one of "
            f"{', '.join(KNOWN_ARCHIVES)}, or point [movielens] archive_path at a local copy"
        )
    cached = cache_dir / f"{archive_name}.zip"
    if cached.is_file():
        try:
            _verify_md5(archive_name, cached)
        except ArchiveError:
            log.warning("Cached %s is corrupt; downloading it again", cached)
            cached.unlink()
    if not cached.is_file():
        _download(archive_name, cached)
        _verify_md5(archive_name, cached)
    return MovieLensArchive(archive_name, cached)


def csv_row_counts(archive: MovieLensArchive) -> dict[str, int]:
    """Validate every CSV's header and count its records."""
    return {table.name: count_csv_rows(archive, table) for table in TABLES}


def count_csv_rows(archive: MovieLensArchive, table: Table) -> int:
    """Check the header and each record's number of fields; count the records (quoted
    fields handled). An error names the file, the line, its text and what to do."""
    try:
        return _checked_rows(archive, table)
    except UnicodeDecodeError as error:
        number, text = _first_line(archive, table, lambda _number, line: not_utf8(line))
        # Decoding runs ahead of the parser: a defect on an earlier line is the first one.
        _checked_rows(archive, table, errors="surrogateescape", before=number)
        raise ArchiveError(
            f"{table.csv_file} in {archive.path} is not UTF-8 at line {number} ({error.reason}): "
            f"line {number} reads {quoted_line(text)}. MovieLens files are UTF-8; re-download "
            f"the file, or save line {number} as UTF-8, and rerun."
        ) from None


def _checked_rows(
    archive: MovieLensArchive, table: Table, errors: str = "strict", before: int | None = None
) -> int:
    """Count the records of a CSV, raising ``ArchiveError`` on the first bad one (only the
    lines before ``before`` when given)."""
    if before == 1:
        return 0
    with archive.open_csv(table) as raw:
        last_line = [""]  # the last raw line the reader took: does the file end with a newline?

        def remembered(lines: Iterator[str]) -> Iterator[str]:
            for last_line[0] in lines:
                yield last_line[0]

        text = io.TextIOWrapper(raw, encoding="utf-8", errors=errors, newline="")
        reader = csv.reader(remembered(text))
        header = next(reader, None)
        if header is None:
            raise ArchiveError(
                f"{table.csv_file} in {archive.path} is empty (0 bytes): line 1 should be the "
                f"header {','.join(table.csv_header)}. Re-download or re-export the file."
            )
        if header != table.csv_header:
            raise ArchiveError(
                f"{table.csv_file} in {archive.path} has header {header}, expected "
                f"{table.csv_header}: line 1 reads {quoted_line(','.join(header).encode())}. "
                f"Make line 1 {','.join(table.csv_header)} (the MovieLens column order) and rerun."
            )
        fields, rows, start = len(header), 0, reader.line_num + 1
        for row in reader:
            if before is not None and start >= before:
                break
            if len(row) != fields:
                raise ArchiveError(_wrong_fields(archive, table, start, reader.line_num, row))
            rows += 1
            start = reader.line_num + 1
        if before is None and not last_line[0].endswith("\n"):
            # MovieLens files end with a newline: a last row without one was cut short, and
            # may parse as a wrong but valid row (Aurora's import would load it).
            number = reader.line_num
            raise ArchiveError(
                f"{table.csv_file} in {archive.path} ends mid-line: line {number} reads "
                f"{quoted_line(last_line[0].encode(errors='surrogateescape'))} with no newline "
                "after it, so the file looks cut short (an interrupted download or copy). "
                "Download or export the file again; if it is complete, end it with a newline."
            )
        return rows


def _wrong_fields(
    archive: MovieLensArchive, table: Table, first: int, last: int, row: list[str]
) -> str:
    _, text = _first_line(archive, table, lambda number, _line: number == first)
    spans = (
        f" Its row runs on to line {last}: a quote on line {first} is not closed where the "
        "field ends (close it, or double a quote inside the field)."
        if last > first
        else ""
    )
    hint = (
        "quote a field that holds a comma"
        if len(row) > len(table.csv_header)
        else "give it every column of the header"
    )
    return (
        f"{table.csv_file} in {archive.path}: line {first} holds {len(row)} fields, expected "
        f"{len(table.csv_header)} ({','.join(table.csv_header)}): line {first} reads "
        f"{quoted_line(text)}.{spans} Fix line {first} ({hint}) and rerun."
    )


def not_utf8(line: bytes) -> bool:
    """Whether a line of bytes does not decode as UTF-8."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _first_line(
    archive: MovieLensArchive, table: Table, wanted: Callable[[int, bytes], bool]
) -> tuple[int, bytes]:
    """Read the CSV again (only once a check failed) for the first line ``wanted`` accepts."""
    with archive.open_csv(table) as raw:
        for number, line in enumerate(physical_lines(raw), 1):
            if wanted(number, line):
                return number, line
    raise AssertionError(f"no line of {table.csv_file} is the one that failed the check")


def physical_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The stream's lines, split at each newline (without it), read in 1 MiB chunks."""
    rest = b""
    while chunk := stream.read(_CHUNK):
        *lines, rest = (rest + chunk).split(b"\n")
        yield from lines
    if rest:
        yield rest


def quoted_line(text: bytes, limit: int = 80) -> str:
    """A line of a CSV as an error message shows it: quoted, shortened, bad bytes as ``\\xNN``."""
    shown = text.rstrip(b"\r").decode("utf-8", "backslashreplace")
    return f'"{shown}"' if len(shown) <= limit else f'"{shown[:limit]}..."'
