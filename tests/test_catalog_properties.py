"""Property-based tests over catalogs: whatever a user writes, the catalog is either accepted and
built as written, or refused with a message naming the file, row and column of a real problem.

Hypothesis draws the rows (ids with repeats, years in and out of range or not numbers at all,
genre names in any case, alias and separator, huge titles, extra columns), the column order, the
optional columns left out and the file format. An independent oracle says what the reader must
make of it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import featurestore
from catalogs.genres import STUDY_GENRES
from catalogs.reader import YEAR_RANGE, CatalogError, UnknownGenreWarning, read_catalog
from tests.helpers import write_audio

N_FILES = 6
SPELLINGS = {g: [g, g.lower(), g.upper(), f" {g} "] for g in STUDY_GENRES}
SPELLINGS["Sci-Fi"] += ["Science Fiction", "SciFi", "sci fi", "SCIENCE-FICTION"]
SPELLINGS["Film-Noir"] = ["film noir", "Noir", "FILM-NOIR"]
SPELLINGS["Giallo"] = ["Giallo"]  # outside IMDB's list: kept as given, with a warning
SEPARATORS = ["|", ",", ";", "/", " | ", ", "]
OPTIONAL = ["track_id", "title", "film", "composer", "year", "genres", "mood"]

words = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
huge = st.builds(lambda c, n: c * n, st.sampled_from("aé第 "), st.integers(10_000, 120_000))


@st.composite
def years(draw):
    kind = draw(st.sampled_from(["ok", "ok", "none", "low", "high", "text", "fraction"]))
    lo, hi = YEAR_RANGE
    return {"ok": lambda: str(draw(st.integers(lo, hi))),
            "none": lambda: "",
            "low": lambda: str(draw(st.integers(-5000, lo - 1))),
            "high": lambda: str(draw(st.integers(hi + 1, 10 ** 6))),
            "text": lambda: draw(st.sampled_from(["MCMLX", "nineteen", "19x9", "n/a"])),
            "fraction": lambda: f"{draw(st.integers(lo, hi - 1))}.5"}[kind]()


@st.composite
def genre_cells(draw, as_list: bool):
    """(cell as written, the normalized list the reader must give)."""
    names = draw(st.lists(st.sampled_from(sorted(SPELLINGS)), max_size=4))
    spelled = [draw(st.sampled_from(SPELLINGS[n])) for n in names]
    expected = list(dict.fromkeys(names))
    if as_list:
        return spelled, expected
    return draw(st.sampled_from(SEPARATORS)).join(spelled), expected


@dataclass
class Drawn:
    frame: pd.DataFrame  # every cell as the user wrote it
    genres: list[list[str]]  # what the reader must make of the genres column
    fmt: str


@st.composite
def catalogs(draw):
    n = draw(st.integers(1, N_FILES))
    fmt = draw(st.sampled_from(["csv", "jsonl", "parquet"]))
    columns = ["path"] + [c for c in OPTIONAL if draw(st.booleans())]
    columns = draw(st.permutations(columns))
    rows, genres = [], []
    as_list = fmt != "csv" and draw(st.booleans())  # list cells: JSON Lines and Parquet
    for i in range(n):
        cell, expected = draw(genre_cells(as_list))
        rows.append({"path": f"audio/t{i}.wav",
                     "track_id": draw(st.sampled_from(["a", "b", "c", "d", "e", "f", "g"])
                                      | st.just(f"id-{i}")),
                     "title": draw(words | huge), "film": draw(words),
                     "composer": draw(words), "year": draw(years()), "genres": cell,
                     "mood": draw(words)})
        genres.append(expected if "genres" in columns else [])
    return Drawn(pd.DataFrame(rows)[columns], genres, fmt)


def problems(drawn: Drawn) -> dict[tuple[int, str], str]:
    """Every (row label, column) the reader may refuse, with the words its message must hold."""
    frame, label = drawn.frame, (lambda i: i + 2 if drawn.fmt == "csv" else i + 1)
    out = {}
    if "track_id" in frame.columns:
        seen: dict[str, int] = {}
        for i, tid in enumerate(frame["track_id"]):
            if tid in seen:
                out[(label(i), "track_id")] = (f"duplicate track_id '{tid}', first at row "
                                               f"{label(seen[tid])}")
            seen.setdefault(tid, i)
    if "year" in frame.columns:
        lo, hi = YEAR_RANGE
        for i, text in enumerate(frame["year"]):
            if not text:
                continue
            if not re.fullmatch(r"-?\d+(\.\d+)?", text):
                out[(label(i), "year")] = "is not a number"
            elif "." in text:
                out[(label(i), "year")] = "is not a whole year"
            elif not lo <= int(text) <= hi:
                out[(label(i), "year")] = "cannot be a release year"
    return out


def write(drawn: Drawn, directory: str) -> str:
    path = os.path.join(directory, f"catalog.{drawn.fmt}")
    frame = drawn.frame
    if drawn.fmt == "csv":
        frame.to_csv(path, index=False)
    elif drawn.fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def _text(value):
    text = str(value).strip() if isinstance(value, str) else None
    return text or None


def check_accepted(drawn: Drawn, frame: pd.DataFrame, directory: str) -> None:
    """The reader's frame says what the user wrote, normalized as documented."""
    given = drawn.frame
    n = len(given)
    assert len(frame) == n
    ids = (list(given["track_id"]) if "track_id" in given.columns
           else list(given["path"]))
    assert list(frame["track_id"]) == ids
    assert list(frame["path"]) == [os.path.join(directory, p) for p in given["path"]]
    for col in ("title", "film", "composer"):
        expected = [_text(v) for v in given[col]] if col in given.columns else [None] * n
        assert [None if pd.isna(v) else v for v in frame[col]] == expected, col
    expected_years = ([int(y) if y else None for y in given["year"]]
                      if "year" in given.columns else [None] * n)
    assert [None if pd.isna(v) else int(v) for v in frame["year"]] == expected_years
    assert [list(g) for g in frame["genres"]] == drawn.genres
    if "mood" in given.columns:
        assert [None if pd.isna(v) else v for v in frame["mood"]] == [
            None if (drawn.fmt == "csv" and v == "") else v for v in given["mood"]]


def read_or_refuse(drawn: Drawn, directory: str):
    """Read the drawn catalog and check the outcome; return the catalog path if accepted."""
    path = write(drawn, directory)
    expected = problems(drawn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownGenreWarning)
        try:
            catalog = read_catalog(path)
        except CatalogError as err:
            assert expected, f"refused a good catalog: {err}"
            assert str(err).startswith(path)
            assert (err.row, err.column) in expected, (str(err), expected)
            assert expected[(err.row, err.column)] in str(err)
            return None
    assert not expected, f"accepted a catalog with problems: {expected}"
    check_accepted(drawn, catalog.frame, directory)
    return path


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(catalogs())
def test_every_catalog_is_read_as_written_or_refused_naming_the_problem(drawn):
    directory = tempfile.mkdtemp()
    try:
        read_or_refuse(drawn, directory)
    finally:
        shutil.rmtree(directory)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("property-audio")
    os.makedirs(directory / "audio")
    for i in range(N_FILES):
        write_audio(directory / "audio" / f"t{i}.wav", 10.0, seed=i)
    return str(directory)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(drawn=catalogs())
def test_accepted_catalogs_build_and_refused_ones_leave_no_store(drawn, audio_dir,
                                                                 dask_client):
    store = tempfile.mkdtemp()
    shutil.rmtree(store)
    try:
        path = read_or_refuse(drawn, audio_dir)
        if path is None:
            with pytest.raises(CatalogError), warnings.catch_warnings():
                warnings.simplefilter("ignore", UnknownGenreWarning)
                featurestore.build(write(drawn, audio_dir), store, client=dask_client,
                                   progress=False)
            assert not os.path.exists(store)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnknownGenreWarning)
            report = featurestore.build(path, store, client=dask_client, progress=False)
        assert report.exit_code == 0 and report.built == len(drawn.frame)
        tracks = featurestore.open(store).tracks()
        assert sorted(tracks["status"]) == ["ok"] * len(drawn.frame)
        assert (tracks["n_tiles"] == 1).all()
        by_id = tracks.set_index("track_id")
        ids = (drawn.frame["track_id"] if "track_id" in drawn.frame.columns
               else drawn.frame["path"])
        for tid, genres in zip(ids, drawn.genres):
            assert list(by_id.loc[tid, "genres"]) == genres
    finally:
        shutil.rmtree(store, ignore_errors=True)
