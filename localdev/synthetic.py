"""MovieLens-shaped synthetic data at any scale, deterministic by seed, for benchmarks and tests.

    python -m localdev.synthetic OUT_DIR --ratings 1000000 [--seed 0]

Writes the four files the pipeline loads (``ratings.csv``, ``tags.csv``, ``movies.csv``,
``links.csv``) with the MovieLens headers, quoting and shapes: ratings sorted by user then
movie with unique ``(userId, movieId)``, half-star ratings, epoch-second timestamps; tags
unique per ``(userId, movieId, tag)``; every rating, tag and link refers to an existing
movie; titles with commas, double quotes, non-ASCII letters and no year; movies with
``(no genres listed)``; links with an empty ``tmdbId``.

The ratings count is the knob; users, movies and tags follow from it in ml-latest-small's
proportions (about 165 ratings per user, one movie per 10 ratings up to 90,000 movies,
one tag per 27 ratings). Files are streamed row by row: memory stays flat whatever the size
(only the movie ids, at most 90,000, are held). The same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from movielens_pipeline.tables import TABLES_BY_NAME

MAX_MOVIES = 90_000
MIN_MOVIES = 50
RATINGS_PER_MOVIE = 10
MEAN_RATINGS_PER_USER = 165
MIN_RATINGS_PER_USER = 20
RATINGS_PER_TAG = 27
NO_GENRES = "(no genres listed)"
FIRST_EPOCH = 828_124_800  # 1996-03-30, the earliest MovieLens ratings
LAST_EPOCH = 1_697_155_200  # 2023-10-13, when ml-32m was generated

GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# The awkward titles MovieLens really has, written first so that every file, however small,
# exercises them: commas (inside quotes in the CSV), double quotes, non-ASCII, no year.
SPECIAL_TITLES = (
    "Good, the Bad and the Ugly, The (Buono, il brutto, il cattivo, Il) (1966)",
    "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1964)",
    '"Great Performances" Cats (1998)',
    "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)",
    "Tokyo Story (Tôkyô monogatari) (1953)",
    "Spirited Away (千と千尋の神隠し) (2001)",
    "Stranger Things",
    'Léon: The Professional (a.k.a. "The Professional") (1994)',
)
TITLE_WORDS = (
    "Night",
    "City",
    "Love",
    "Return",
    "Dark",
    "Last",
    "Summer",
    "Story",
    "King",
    "Dream",
    "Man",
    "Woman",
    "Star",
    "Blue",
    "Road",
    "War",
    "Ghost",
    "Island",
    "Café",
    "Señor",
    "Ærøskøbing",
    "Mädchen",
    "Čapek",
    "東京",
    "Ковбой",
)
TAG_WORDS = (
    "atmospheric",
    "dark comedy",
    "based on a book",
    "twist ending",
    "funny",
    "visually appealing",
    "Oscar (Best Picture)",
    "so bad, it's good",
    '"classic"',
    "café culture",
    "Studio Ghibli",
    "thought-provoking",
    "quirky",
    "sci-fi",
    "Kurosawa",
    "Mieville's fault",
)
# Half-star ratings with MovieLens' skew towards 3.0, 4.0 and 5.0.
RATING_VALUES = ("0.5", "1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0", "4.5", "5.0")
RATING_WEIGHTS = (1.4, 2.8, 1.8, 7.6, 5.5, 19.8, 13.1, 26.8, 8.5, 13.2)


@dataclass(frozen=True)
class SyntheticShape:
    """How many rows each file gets for a given number of ratings."""

    ratings: int
    movies: int
    tags: int

    @classmethod
    def for_ratings(cls, ratings: int) -> SyntheticShape:
        if ratings < 1:
            raise ValueError(f"ratings must be at least 1, got {ratings}")
        movies = min(MAX_MOVIES, max(MIN_MOVIES, ratings // RATINGS_PER_MOVIE))
        return cls(ratings=ratings, movies=movies, tags=max(1, ratings // RATINGS_PER_TAG))


def _writer(stream: IO[str]) -> csv.writer:
    # MovieLens files: comma separated, quoted only when needed, LF line ends, UTF-8.
    return csv.writer(stream, lineterminator="\n")


def _open(path: Path) -> IO[str]:
    return path.open("w", encoding="utf-8", newline="")


def _movie_ids(count: int, rng: random.Random) -> list[int]:
    """Increasing ids with gaps, like MovieLens' (1, 2, ..., 193609 for 9742 movies)."""
    ids, current = [], 0
    for _ in range(count):
        current += 1 if rng.random() < 0.8 else rng.randint(2, 40)
        ids.append(current)
    return ids


def _title(index: int, rng: random.Random) -> str:
    if index < len(SPECIAL_TITLES):
        return SPECIAL_TITLES[index]
    words = " ".join(rng.choice(TITLE_WORDS) for _ in range(rng.randint(1, 4)))
    roll = rng.random()
    if roll < 0.04:
        words = f"{words}, The"  # MovieLens moves leading articles behind a comma
    elif roll < 0.05:
        words = f'"{words}"'
    if rng.random() < 0.01:
        return words  # no year, as some MovieLens titles
    return f"{words} ({rng.randint(1902, 2023)})"


def _genres(index: int, rng: random.Random) -> str:
    if index == 1 or rng.random() < 0.0035:
        return NO_GENRES
    return "|".join(sorted(rng.sample(GENRES, rng.randint(1, 4))))


def _write_movies_and_links(folder: Path, movie_ids: list[int], seed: int) -> tuple[int, int]:
    rng = random.Random(f"{seed}:movies")  # noqa: S311 - test data, not secrets
    with _open(folder / "movies.csv") as movies, _open(folder / "links.csv") as links:
        movie_rows, link_rows = _writer(movies), _writer(links)
        movie_rows.writerow(TABLES_BY_NAME["movies"].csv_header)
        link_rows.writerow(TABLES_BY_NAME["links"].csv_header)
        for index, movie_id in enumerate(movie_ids):
            movie_rows.writerow((movie_id, _title(index, rng), _genres(index, rng)))
            imdb = f"{rng.randint(1, 9_999_999):07d}"
            tmdb = "" if index == 2 or rng.random() < 0.001 else rng.randint(2, 1_200_000)
            link_rows.writerow((movie_id, imdb, tmdb))
    return len(movie_ids), len(movie_ids)


def _distinct_movies(count: int, movies: int, rng: random.Random) -> list[int]:
    """``count`` distinct movie indexes, popular (low) indexes more likely, sorted."""
    if count * 2 > movies:
        return sorted(rng.sample(range(movies), count))
    chosen: set[int] = set()
    while len(chosen) < count:
        chosen.add(int(movies * rng.random() ** 2))
    return sorted(chosen)


def _user_ratings(total: int, movies: int, rng: random.Random) -> Iterator[int]:
    """How many ratings each user gives, user after user, summing to ``total``."""
    left = total
    while left:
        wanted = MIN_RATINGS_PER_USER + int(
            rng.expovariate(1 / (MEAN_RATINGS_PER_USER - MIN_RATINGS_PER_USER))
        )
        count = min(left, wanted, movies)
        yield count
        left -= count


def _write_ratings(folder: Path, shape: SyntheticShape, movie_ids: list[int], seed: int) -> int:
    """Stream the ratings; return the number of users."""
    rng = random.Random(f"{seed}:ratings")  # noqa: S311 - test data, not secrets
    users = 0
    with _open(folder / "ratings.csv") as out:
        out.write(",".join(TABLES_BY_NAME["ratings"].csv_header) + "\n")
        for users, count in enumerate(_user_ratings(shape.ratings, shape.movies, rng), start=1):
            started = rng.randint(FIRST_EPOCH, LAST_EPOCH - 86_400)
            values = rng.choices(RATING_VALUES, RATING_WEIGHTS, k=count)
            # Plain numbers never need quoting: one formatted line per rating is the fast way.
            out.writelines(
                f"{users},{movie_ids[movie]},{value},{started + rng.randint(0, 86_400)}\n"
                for movie, value in zip(
                    _distinct_movies(count, shape.movies, rng), values, strict=True
                )
            )
    return users


def _write_tags(
    folder: Path, shape: SyntheticShape, movie_ids: list[int], users: int, seed: int
) -> int:
    rng = random.Random(f"{seed}:tags")  # noqa: S311 - test data, not secrets
    per_user = max(1, min(len(TAG_WORDS) * 4, shape.tags // max(1, users) + 1))
    written = 0
    with _open(folder / "tags.csv") as out:
        rows = _writer(out)
        rows.writerow(TABLES_BY_NAME["tags"].csv_header)
        user = 0
        # per_user x users >= tags: each user is visited once, so (user, movie, tag) is unique.
        while written < shape.tags:
            user += 1
            count = min(per_user, shape.tags - written)
            pairs: set[tuple[int, str]] = set()
            while len(pairs) < count:
                pairs.add((rng.randrange(shape.movies), rng.choice(TAG_WORDS)))
            for movie, tag in sorted(pairs):
                stamp = rng.randint(FIRST_EPOCH, LAST_EPOCH)
                rows.writerow((user, movie_ids[movie], tag, stamp))
            written += count
    return written


def write_synthetic_csvs(folder: Path, ratings: int, seed: int = 0) -> dict[str, int]:
    """Write the four CSVs into ``folder``; return the data rows written per table."""
    shape = SyntheticShape.for_ratings(ratings)
    folder.mkdir(parents=True, exist_ok=True)
    movie_ids = _movie_ids(shape.movies, random.Random(f"{seed}:movie-ids"))  # noqa: S311
    movies, links = _write_movies_and_links(folder, movie_ids, seed)
    users = _write_ratings(folder, shape, movie_ids, seed)
    tags = _write_tags(folder, shape, movie_ids, users, seed)
    return {"ratings": shape.ratings, "tags": tags, "movies": movies, "links": links}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--ratings", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = write_synthetic_csvs(args.folder, args.ratings, args.seed)
    print(", ".join(f"{table} {rows:,}" for table, rows in counts.items()), "in", args.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
