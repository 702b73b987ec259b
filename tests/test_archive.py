"""Getting the archive: checksum, cache, local copies, and clear errors on bad input."""

from __future__ import annotations

import io
import re
import time
import zipfile
from pathlib import Path

import pytest

from movielens_pipeline import archive as archive_module
from movielens_pipeline.archive import ArchiveError, MovieLensArchive, csv_row_counts, fetch_archive
from movielens_pipeline.compat import AirflowFailException


def extract(archive: Path, folder: Path) -> Path:
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(folder)
    return folder / "ml-latest-small"


def test_verified_archive_counts_match_the_published_figures(archive_path: Path, tmp_path: Path):
    source = fetch_archive("ml-latest-small", str(archive_path), tmp_path)
    counts = csv_row_counts(source)
    # The figures GroupLens publishes in the archive's README.txt.
    assert counts == {"ratings": 100836, "tags": 3683, "movies": 9742, "links": 9742}


def test_wrong_checksum_names_the_file_and_both_sums(archive_path: Path, tmp_path: Path):
    corrupt = tmp_path / "ml-latest-small.zip"
    data = bytearray(archive_path.read_bytes())
    data[-100] ^= 0xFF
    corrupt.write_bytes(bytes(data))

    with pytest.raises(ArchiveError) as error:
        fetch_archive("ml-latest-small", str(corrupt), tmp_path / "cache")
    message = str(error.value)
    assert str(corrupt) in message
    assert archive_module.PUBLISHED_MD5["ml-latest-small"] in message
    assert archive_module.md5_of(corrupt) in message


def test_corrupt_cache_is_downloaded_again(archive_path: Path, tmp_path: Path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "ml-latest-small.zip").write_bytes(b"not a zip")
    # The bundled copy plays GroupLens' server.
    monkeypatch.setattr(
        archive_module, "GROUPLENS_URL", archive_path.parent.as_uri() + "/{name}.zip"
    )

    source = fetch_archive("ml-latest-small", "", cache)

    assert source.path == cache / "ml-latest-small.zip"
    assert archive_module.md5_of(source.path) == archive_module.PUBLISHED_MD5["ml-latest-small"]


def test_folder_of_csvs_is_accepted(archive_path: Path, tmp_path: Path):
    folder = extract(archive_path, tmp_path)
    source = fetch_archive("ml-latest-small", str(folder), tmp_path / "cache")
    assert csv_row_counts(source)["movies"] == 9742


def test_missing_local_copy_says_what_to_set(tmp_path: Path):
    with pytest.raises(ArchiveError, match=r"does not exist: point \[movielens\] archive_path"):
        fetch_archive("ml-latest-small", str(tmp_path / "nowhere.zip"), tmp_path)


def test_missing_csv_in_folder_is_named(archive_path: Path, tmp_path: Path):
    folder = extract(archive_path, tmp_path)
    (folder / "links.csv").unlink()
    with pytest.raises(ArchiveError, match=r"links\.csv is missing"):
        csv_row_counts(MovieLensArchive("ml-latest-small", folder))


def test_missing_member_in_archive_is_named(archive_path: Path, tmp_path: Path):
    partial = tmp_path / "partial.zip"
    with zipfile.ZipFile(archive_path) as full, zipfile.ZipFile(partial, "w") as out:
        for name in full.namelist():
            if not name.endswith("tags.csv"):
                out.writestr(name, full.read(name))
    with pytest.raises(ArchiveError, match=r"has no ml-latest-small/tags\.csv"):
        csv_row_counts(MovieLensArchive("ml-latest-small", partial))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"movieId,title\n1,Toy Story (1995)\n", r"has header \['movieId', 'title'\], expected"),
        (b"movieId,title,genres\n1,Caf\xe9,Comedy\n", "is not UTF-8"),
    ],
)
def test_bad_csv_is_a_clear_error(
    archive_path: Path, tmp_path: Path, content: bytes, expected: str
):
    folder = extract(archive_path, tmp_path)
    (folder / "movies.csv").write_bytes(content)
    with pytest.raises(ArchiveError, match=expected) as error:
        csv_row_counts(MovieLensArchive("ml-latest-small", folder))
    assert "movies.csv" in str(error.value)


def synthetic_archive(folder: Path, name: str) -> Path:
    """A small archive shaped like GroupLens' ``<name>.zip``, from the synthetic generator."""
    from localdev.synthetic import write_synthetic_csvs

    write_synthetic_csvs(folder / "csv", ratings=2_000, seed=1)
    archive = folder / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for csv_file in sorted((folder / "csv").iterdir()):
            out.write(csv_file, f"{name}/{csv_file.name}")
    return archive


@pytest.mark.parametrize("name", ["ml-25m", "ml-32m"])
def test_large_archives_by_name_are_downloaded_cached_and_said_to_be_unchecksummed(
    tmp_path: Path, monkeypatch, caplog, name: str
):
    assert name in archive_module.KNOWN_ARCHIVES
    assert archive_module.GROUPLENS_URL.format(name=name) == (
        f"https://files.grouplens.org/datasets/movielens/{name}.zip"
    )
    # No sum from GroupLens' own material was found for these: none may be invented.
    assert name not in archive_module.PUBLISHED_MD5
    server = tmp_path / "server"
    server.mkdir()
    synthetic_archive(server, name)
    monkeypatch.setattr(archive_module, "GROUPLENS_URL", server.as_uri() + "/{name}.zip")
    cache = tmp_path / "cache"

    with caplog.at_level("INFO", logger=archive_module.__name__):
        source = fetch_archive(name, "", cache)
    assert source.path == cache / f"{name}.zip"
    assert csv_row_counts(source)["ratings"] == 2_000
    assert f"No published MD5 known for {name}" in caplog.text

    def no_download(*_args):
        raise AssertionError("the cached archive should be used")

    monkeypatch.setattr(archive_module, "_download", no_download)
    assert fetch_archive(name, "", cache).path == source.path


def test_download_logs_progress_in_bytes_and_percent(archive_path: Path, tmp_path, monkeypatch):
    monkeypatch.setattr(
        archive_module, "GROUPLENS_URL", archive_path.parent.as_uri() + "/{name}.zip"
    )
    monkeypatch.setattr(archive_module, "PROGRESS_EVERY_BYTES", 256 << 10)
    messages = []
    monkeypatch.setattr(archive_module.log, "info", lambda fmt, *args: messages.append(fmt % args))

    fetch_archive("ml-latest-small", "", tmp_path)

    progress = [m for m in messages if m.startswith("ml-latest-small: ")]
    assert len(progress) == 4, messages  # 0.93 MiB: 3 steps of 256 KiB, then the total
    assert progress[-1].startswith("ml-latest-small: 0.9 of 0.9 MiB (100%")
    assert not list(tmp_path.glob("*.part"))


def test_interrupted_download_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    def short_response(*_args, **_kwargs):
        response = io.BytesIO(b"x" * 10)
        response.headers = {"Content-Length": "1000"}
        return response

    monkeypatch.setattr(archive_module.urllib.request, "urlopen", short_response)
    with pytest.raises(ArchiveError, match=r"stopped at 10 of 1000 bytes"):
        fetch_archive("ml-latest-small", "", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_archive_name_lists_the_known_ones(tmp_path: Path):
    with pytest.raises(ArchiveError, match=r"Unknown MovieLens archive 'ml-1b'.*ml-25m, ml-32m"):
        fetch_archive("ml-1b", "", tmp_path)


@pytest.mark.parametrize(
    "address",
    ["http://127.0.0.1:{port}/{{name}}.zip", "https://movielens-archive.invalid/{{name}}.zip"],
    ids=["connection-refused", "unknown-host"],
)
def test_unreachable_grouplens_fails_at_once_naming_the_offline_option(
    tmp_path: Path, monkeypatch, address: str
):
    from localdev.stack import free_port

    monkeypatch.setattr(archive_module, "GROUPLENS_URL", address.format(port=free_port()))
    started = time.monotonic()
    with pytest.raises(archive_module.GroupLensUnreachable) as error:
        fetch_archive("ml-latest-small", "", tmp_path / "cache")
    assert time.monotonic() - started < archive_module.DOWNLOAD_TIMEOUT_SECONDS
    message = str(error.value)
    assert "Cannot download ml-latest-small" in message
    assert "[movielens] archive_path" in message and "MOVIELENS_ARCHIVE" in message
    assert not list((tmp_path / "cache").glob("*"))
    # No retry: the task fails for good (AirflowFailException), it does not wait to try again.
    assert isinstance(error.value, AirflowFailException)


def movies_lines(archive_path: Path) -> list[bytes]:
    with zipfile.ZipFile(archive_path) as archive:
        return archive.read("ml-latest-small/movies.csv").split(b"\r\n")[:-1]


# name: (lines replaced in the real movies.csv, the lines the message names, its parts)
MALFORMED = {
    "empty": (
        None,
        {1},
        [
            "movies.csv in {folder} is empty (0 bytes): line 1 should be the header "
            "movieId,title,genres. Re-download or re-export the file."
        ],
    ),
    "columns-swapped-in-header": (
        {1: b"movieId,genres,title"},
        {1},
        ['line 1 reads "movieId,genres,title". Make line 1 movieId,title,genres'],
    ),
    "quote-never-closed-early": (
        {6: b'5,"Father of the Bride Part II (1995),Comedy'},
        {6, 12},  # Python's csv ends that row at line 12, where the next quoted title is
        [
            "movies.csv in {folder}: line 6 holds 4 fields, expected 3 (movieId,title,genres): "
            'line 6 reads "5,"Father of the Bride Part II (1995),Comedy".',
            "Its row runs on to line 12: a quote on line 6 is not closed",
            "Fix line 6",
        ],
    ),
    "missing-field": (
        {40: b"42,Dead Presidents (1995)"},
        {40},
        [
            "line 40 holds 2 fields, expected 3 (movieId,title,genres): line 40 reads "
            '"42,Dead Presidents (1995)". Fix line 40 (give it every column of the header)'
        ],
    ),
    "invalid-utf8": (
        {300: b'340,"War, The \xe9(1994)",Adventure|Drama|War'},
        {300},
        [
            "movies.csv in {folder} is not UTF-8 at line 300 (invalid continuation byte): "
            'line 300 reads "340,"War, The \\xe9(1994)",Adventure|Drama|War".',
            "save line 300 as UTF-8, and rerun",
        ],
    ),
    # Decoding runs ahead of the parser (the bad byte sits in the same 8 KiB as line 40).
    "missing-field-before-invalid-utf8": (
        {40: b"42,Dead Presidents (1995)", 80: b"87,Dunston Checks In \xff(1996),Children"},
        {40},
        ["line 40 holds 2 fields"],
    ),
    "invalid-utf8-before-missing-field": (
        {40: b"42,Dead Presidents \xff(1995),Action", 80: b"87,Dunston Checks In (1996)"},
        {40},
        ["is not UTF-8 at line 40 (invalid start byte)"],
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_csv_names_the_first_bad_line_its_text_and_what_to_do(
    archive_path: Path, tmp_path: Path, case: str
):
    replaced, lines_named, expected = MALFORMED[case]
    folder = extract(archive_path, tmp_path)
    lines = movies_lines(archive_path)
    for number, line in (replaced or {}).items():
        lines[number - 1] = line
    body = b"".join(line + b"\r\n" for line in lines) if replaced else b""
    (folder / "movies.csv").write_bytes(body)

    with pytest.raises(ArchiveError) as error:
        csv_row_counts(MovieLensArchive("ml-latest-small", folder))

    message = str(error.value)
    for part in expected:
        assert part.format(folder=folder) in message
    assert "None" not in message and "position" not in message  # no byte offsets
    assert {int(n) for n in re.findall(r"\b[Ll]ines? (\d+)", message)} == lines_named


def test_a_file_cut_mid_line_names_its_last_line_and_says_to_fetch_it_again(
    archive_path: Path, tmp_path: Path
):
    folder = extract(archive_path, tmp_path)
    lines = movies_lines(archive_path)
    # Cut inside the last line's genres: the row still has its three fields.
    body = b"".join(line + b"\r\n" for line in lines)[:-4]
    (folder / "movies.csv").write_bytes(body)

    with pytest.raises(ArchiveError) as error:
        csv_row_counts(MovieLensArchive("ml-latest-small", folder))

    message = str(error.value)
    cut_line = lines[-1][:-2].decode()
    assert (
        f'movies.csv in {folder} ends mid-line: line {len(lines)} reads "{cut_line}" with no '
        "newline after it" in message
    )
    assert "Download or export the file again" in message
    assert {int(n) for n in re.findall(r"\b[Ll]ines? (\d+)", message)} == {len(lines)}
