"""Getting the archive: checksum, cache, local copies, and clear errors on bad input."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from movielens_pipeline import dataset
from movielens_pipeline.dataset import DatasetError, MovieLensSource, csv_row_counts, fetch_dataset


def extract(archive: Path, folder: Path) -> Path:
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(folder)
    return folder / "ml-latest-small"


def test_verified_archive_counts_match_the_published_figures(archive_path: Path, tmp_path: Path):
    source = fetch_dataset("ml-latest-small", str(archive_path), tmp_path)
    counts = csv_row_counts(source)
    # The figures GroupLens publishes in the archive's README.txt.
    assert counts == {"ratings": 100836, "tags": 3683, "movies": 9742, "links": 9742}


def test_wrong_checksum_names_the_file_and_both_sums(archive_path: Path, tmp_path: Path):
    corrupt = tmp_path / "ml-latest-small.zip"
    data = bytearray(archive_path.read_bytes())
    data[-100] ^= 0xFF
    corrupt.write_bytes(bytes(data))

    with pytest.raises(DatasetError) as error:
        fetch_dataset("ml-latest-small", str(corrupt), tmp_path / "cache")
    message = str(error.value)
    assert str(corrupt) in message
    assert dataset.PUBLISHED_MD5["ml-latest-small"] in message
    assert dataset.md5_of(corrupt) in message


def test_corrupt_cache_is_downloaded_again(archive_path: Path, tmp_path: Path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "ml-latest-small.zip").write_bytes(b"not a zip")
    # The shared copy plays GroupLens' server.
    monkeypatch.setattr(dataset, "GROUPLENS_URL", archive_path.parent.as_uri() + "/{name}.zip")

    source = fetch_dataset("ml-latest-small", "", cache)

    assert source.path == cache / "ml-latest-small.zip"
    assert dataset.md5_of(source.path) == dataset.PUBLISHED_MD5["ml-latest-small"]


def test_folder_of_csvs_is_accepted(archive_path: Path, tmp_path: Path):
    folder = extract(archive_path, tmp_path)
    source = fetch_dataset("ml-latest-small", str(folder), tmp_path / "cache")
    assert csv_row_counts(source)["movies"] == 9742


def test_missing_local_copy_says_what_to_set(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"does not exist: point \[movielens\] archive"):
        fetch_dataset("ml-latest-small", str(tmp_path / "nowhere.zip"), tmp_path)


def test_missing_csv_in_folder_is_named(archive_path: Path, tmp_path: Path):
    folder = extract(archive_path, tmp_path)
    (folder / "links.csv").unlink()
    with pytest.raises(DatasetError, match=r"links\.csv is missing"):
        csv_row_counts(MovieLensSource("ml-latest-small", folder))


def test_missing_member_in_archive_is_named(archive_path: Path, tmp_path: Path):
    partial = tmp_path / "partial.zip"
    with zipfile.ZipFile(archive_path) as full, zipfile.ZipFile(partial, "w") as out:
        for name in full.namelist():
            if not name.endswith("tags.csv"):
                out.writestr(name, full.read(name))
    with pytest.raises(DatasetError, match=r"has no ml-latest-small/tags\.csv"):
        csv_row_counts(MovieLensSource("ml-latest-small", partial))


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
    with pytest.raises(DatasetError, match=expected) as error:
        csv_row_counts(MovieLensSource("ml-latest-small", folder))
    assert "movies.csv" in str(error.value)
