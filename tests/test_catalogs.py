"""Catalog reading and validation: formats, genres, and errors that name row and column."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import warnings

import pandas as pd
import pytest

import featurestore
from catalogs import CatalogError, UnknownGenreWarning, normalize_genres, read_catalog
from catalogs.reader import catalog_name
from catalogs.writer import write_catalog
from tests.helpers import cli, small_library, write_audio


def test_genre_strings_lists_and_aliases_normalize_to_imdb_names():
    assert normalize_genres("drama|ROMANCE") == (["Drama", "Romance"], [])
    assert normalize_genres("Science Fiction, thriller") == (["Sci-Fi", "Thriller"], [])
    assert normalize_genres(["SciFi", "sci-fi", "Film Noir"]) == (["Sci-Fi", "Film-Noir"], [])
    assert normalize_genres("Drama; Giallo") == (["Drama", "Giallo"], ["Giallo"])
    assert normalize_genres(None) == ([], [])
    assert normalize_genres(float("nan")) == ([], [])
    assert normalize_genres(" | ,") == ([], [])


def test_csv_catalog_resolves_paths_and_keeps_extra_columns(tmp_path):
    write_audio(tmp_path / "a.wav", 1.0)
    path = write_catalog(tmp_path / "lib.csv", [
        {"track_id": "1", "path": "a.wav", "title": "Main Title", "film": "F", "composer": "C",
         "year": "1999", "genres": "Drama|Romance", "mood": "tense"},
        {"track_id": "2", "path": "/abs/b.wav", "title": "", "film": "F", "composer": "C",
         "year": "", "genres": "", "mood": ""},
    ])
    cat = read_catalog(path)
    assert cat.name == "lib"
    f = cat.frame
    assert f["path"].tolist() == [str(tmp_path / "a.wav"), "/abs/b.wav"]
    assert f["year"].tolist()[0] == 1999 and pd.isna(f["year"].tolist()[1])
    assert f["genres"].tolist() == [["Drama", "Romance"], []]
    assert f["mood"].tolist()[0] == "tense"
    assert pd.isna(f["title"].tolist()[1])


def test_parquet_and_jsonl_catalogs_with_list_genres(tmp_path):
    frame = pd.DataFrame({"track_id": [10, 11], "path": ["x.flac", "y.flac"],
                          "genres": [["drama", "Sci-Fi"], ["Comedy"]], "year": [1960, 1961]})
    frame.to_parquet(tmp_path / "c.parquet")
    cat = read_catalog(str(tmp_path / "c.parquet"))
    assert cat.frame["track_id"].tolist() == ["10", "11"]
    assert cat.frame["genres"].tolist() == [["Drama", "Sci-Fi"], ["Comedy"]]
    with open(tmp_path / "c.jsonl", "w") as f:
        for rec in frame.to_dict("records"):
            f.write(json.dumps(rec) + "\n")
    assert read_catalog(str(tmp_path / "c.jsonl")).frame["genres"].tolist() == [
        ["Drama", "Sci-Fi"], ["Comedy"]]


def test_unknown_genres_are_kept_with_one_warning(tmp_path):
    path = write_catalog(tmp_path / "c.csv", [
        {"path": "a.wav", "genres": "Drama|Giallo"}, {"path": "b.wav", "genres": "Giallo|Kaiju"}])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cat = read_catalog(path)
    ours = [w for w in caught if issubclass(w.category, UnknownGenreWarning)]
    assert len(ours) == 1 and "Giallo" in str(ours[0].message) and "Kaiju" in str(ours[0].message)
    assert cat.frame["genres"].tolist() == [["Drama", "Giallo"], ["Giallo", "Kaiju"]]
    assert cat.unknown_genres == ["Giallo", "Kaiju"]


def test_years_of_old_music_and_announced_releases_are_accepted(tmp_path):
    ahead = datetime.date.today().year + 3
    rows = [{"path": f"{y}.wav", "year": str(y)} for y in (1000, 1360, 1727, ahead)]
    frame = read_catalog(write_catalog(tmp_path / "old.csv", rows)).frame
    assert frame["year"].tolist() == [1000, 1360, 1727, ahead]


@pytest.mark.parametrize("rows, needle", [
    ([{"file": "a.wav"}], "no 'path' column"),
    ([{"path": "a.wav", "year": "1999"}, {"path": "b.wav", "year": "nineteen"}],
     "row 3, column 'year': year 'nineteen' is not a number"),
    ([{"path": "a.wav", "year": "19999"}],
     "row 2, column 'year': year 19999 cannot be a release year (years from 1000 to "),
    ([{"path": "a.wav", "year": "1727"}, {"path": "b.wav", "year": "-40"}],
     "row 3, column 'year': year -40 cannot be a release year"),
    ([{"path": "a.wav", "year": "1999.5"}], "is not a whole year"),
    ([{"track_id": "x", "path": "a.wav"}, {"track_id": "x", "path": "b.wav"}],
     "row 3, column 'track_id': duplicate track_id 'x', first at row 2"),
    ([{"path": "a.wav", "title": "A"}, {"path": "", "title": "B"}],
     "row 3, column 'path': empty path"),
    ([{"path": "a.wav"}, {"path": "a.wav"}], "duplicate path 'a.wav'"),
])
def test_catalog_errors_name_file_row_and_column(tmp_path, rows, needle):
    path = write_catalog(tmp_path / "bad.csv", rows)
    with pytest.raises(CatalogError) as err:
        read_catalog(path)
    assert needle in str(err.value)
    assert str(err.value).startswith(path)


def test_empty_unreadable_and_missing_catalogs(tmp_path):
    (tmp_path / "empty.csv").write_text("path,genres\n")
    with pytest.raises(CatalogError, match="no rows"):
        read_catalog(str(tmp_path / "empty.csv"))
    with pytest.raises(CatalogError, match="file not found"):
        read_catalog(str(tmp_path / "nope.csv"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(CatalogError, match="cannot read"):
        read_catalog(str(tmp_path / "junk.parquet"))
    with pytest.raises(CatalogError, match="unknown catalog format"):
        read_catalog(str(tmp_path / "catalog.xlsx"))


def test_spreadsheet_exports_read_as_written(tmp_path):
    """What spreadsheets write: a byte-order mark, ';' or tabs in a .csv, CRLF line ends, and
    trailing rows with no value. They read as the plain CSV does; empty rows are skipped and
    errors still name the file's own row numbers."""
    rows = [{"track_id": "1", "path": "a.wav", "title": "Überture", "genres": "Drama|Romance"},
            {"track_id": "2", "path": "b.wav", "title": "Finale; reprise", "genres": "Comedy"}]
    plain = read_catalog(write_catalog(tmp_path / "plain.csv", rows)).frame
    assert plain["title"].tolist() == ["Überture", "Finale; reprise"]
    frame = pd.DataFrame(rows)
    exports = {
        "bom.csv": dict(encoding="utf-8-sig"),
        "semicolons.csv": dict(sep=";"),
        "tabs.csv": dict(sep="\t"),
        "crlf.csv": dict(lineterminator="\r\n", encoding="utf-8-sig", sep=";"),
    }
    for name, options in exports.items():
        frame.to_csv(tmp_path / name, index=False, **options)
        with open(tmp_path / name, "a", encoding="utf-8") as f:
            f.write((options.get("sep", ",") * 3) + "\n")  # a row with no value
        got = read_catalog(str(tmp_path / name)).frame
        pd.testing.assert_frame_equal(got.drop(columns="path"), plain.drop(columns="path"))

    # Excel for Mac's "CSV (Macintosh)": lines end in a carriage return alone.
    (tmp_path / "mac.csv").write_bytes(frame.to_csv(index=False, sep=";").replace(
        "\n", "\r").encode())
    got = read_catalog(str(tmp_path / "mac.csv")).frame
    pd.testing.assert_frame_equal(got.drop(columns="path"), plain.drop(columns="path"))

    # Rows with no value and blank lines between tracks do not shift the row numbers.
    (tmp_path / "gap.csv").write_text("path,year\na.wav,1999\n,\n\nb.wav,nineteen\n")
    with pytest.raises(CatalogError, match="gap.csv, row 5, column 'year': year 'nineteen'"):
        read_catalog(str(tmp_path / "gap.csv"))
    # Not UTF-8 (Excel's "CSV" on Windows): refused at the line, with what to do.
    latin1 = "path,title\na.wav,ok\nb.wav,Überture\n".encode("cp1252")
    (tmp_path / "latin1.csv").write_bytes(latin1)
    with pytest.raises(CatalogError, match=r"latin1.csv: line 3 is not UTF-8 text "
                                           r"\(byte 0xdc\); save the catalog as UTF-8"):
        read_catalog(str(tmp_path / "latin1.csv"))
    # An unquoted separator in a value: the row named, not a value shifted into the next
    # column (the first row: pandas took the extra field for an index) or a parser's words.
    for name, text, says in (
            ("first.csv", "path,year,genres\na.wav,1999,Drama,Crime,War\n",
             'row 2: 5 fields where the header has 3; quote a value that holds the separator, '
             'as in "Drama,Crime"'),
            ("later.csv", "path;year\na.wav;1999\nb.wav;1999;x\n",
             'row 3: 3 fields where the header has 2; quote a value that holds the separator, '
             'as in "Drama;Crime"')):
        (tmp_path / name).write_text(text)
        with pytest.raises(CatalogError) as refused:
            read_catalog(str(tmp_path / name))
        assert str(refused.value) == f"{tmp_path / name}, {says}"
    # A column named twice is refused, not read as 'path' and 'path.1'; the unnamed columns of
    # a spreadsheet's trailing separators are not names
    (tmp_path / "twice.csv").write_text("path,title,path\na.wav,x,b.wav\n")
    with pytest.raises(CatalogError, match="twice.csv, row 1: column.s. 'path' appear more "
                                           "than once"):
        read_catalog(str(tmp_path / "twice.csv"))
    (tmp_path / "trailing.csv").write_text("path,title,,\na.wav,x,,\n")
    assert read_catalog(str(tmp_path / "trailing.csv")).frame["title"].tolist() == ["x"]


def test_catalog_name_is_the_file_stem():
    assert catalog_name("/data/score-library.csv") == "score-library"
    assert catalog_name("s3://b/x/lib.v2.parquet") == "lib.v2"


def test_cli_invalid_catalog_exits_3_and_changes_nothing(tmp_path, dask_client):
    lib = small_library(tmp_path / "lib", n=2)
    store = tmp_path / "store"
    featurestore.build(lib, str(store), client=dask_client, progress=False)
    before = {os.path.join(d, p): os.path.getmtime(os.path.join(d, p))
              for d, _, files in os.walk(store) for p in files}
    bad = write_catalog(tmp_path / "lib" / "catalog.csv",
                        [{"track_id": "s000", "path": "audio/s000.wav", "year": "MCMLX"}])
    res = subprocess.run(cli("build", bad, "--store", str(store), "--no-progress"),
                         capture_output=True, text=True)
    assert res.returncode == 3
    assert "row 2, column 'year'" in res.stderr
    after = {os.path.join(d, p): os.path.getmtime(os.path.join(d, p))
             for d, _, files in os.walk(store) for p in files}
    assert before == after


def test_demo_library_is_the_same_audio_however_it_is_generated(tmp_path):
    """Cues are synthesized on several threads, each from its own seed: a library generated at
    once holds the audio of each cue synthesized alone, a second call keeps what is there, and
    a partly generated library is completed to the same files."""
    import numpy as np
    import soundfile as sf

    from catalogs.demo import FILMS, FORMATS, generate_demo_library, synthesize

    short = dict(min_seconds=1.0, max_seconds=2.0)
    whole = generate_demo_library(str(tmp_path / "whole"), n_tracks=6, **short)
    frame = pd.read_csv(whole)
    assert frame["track_id"].tolist() == [f"t{i:05d}" for i in range(6)]
    # t00004 is 32-bit float WAV: what was synthesized, exactly
    data, rate = sf.read(tmp_path / "whole" / "audio" / "t00004.wav", dtype="float32")
    genres, (_, _, _, sr, _) = FILMS[4][3], FORMATS[4]
    seconds = np.random.default_rng(7).uniform(1.0, 2.0, 5)[4]
    assert rate == sr
    np.testing.assert_array_equal(data, synthesize(genres, seconds, sr,
                                                   np.random.default_rng([7, 4])))
    kept = os.path.getmtime(tmp_path / "whole" / "audio" / "t00002.mp3")
    generate_demo_library(str(tmp_path / "whole"), n_tracks=6, **short)
    assert os.path.getmtime(tmp_path / "whole" / "audio" / "t00002.mp3") == kept
    # two cues first, the rest later: the same samples as the library made at once
    generate_demo_library(str(tmp_path / "parts"), n_tracks=2, **short)
    generate_demo_library(str(tmp_path / "parts"), n_tracks=6, **short)
    for name in sorted(os.listdir(tmp_path / "whole" / "audio")):
        a, ra = sf.read(tmp_path / "whole" / "audio" / name)
        b, rb = sf.read(tmp_path / "parts" / "audio" / name)
        assert ra == rb and np.array_equal(a, b), name
    assert not [n for n in os.listdir(tmp_path / "parts" / "audio") if n.endswith(".part")]


def test_demo_library_stops_at_a_cue_that_fails_and_a_rerun_completes_it(tmp_path):
    """A cue that cannot be written ends the generation with its error at once (the cues not
    yet started are not made first), and the next call makes what is missing."""
    from catalogs.demo import generate_demo_library

    audio = tmp_path / "lib" / "audio"
    (audio / "t00000.wav.part").mkdir(parents=True)  # where the first cue is written
    with pytest.raises((OSError, RuntimeError), match="t00000"):  # the cue that failed
        generate_demo_library(str(tmp_path / "lib"), n_tracks=24, min_seconds=1.0,
                              max_seconds=2.0)
    written = [n for n in os.listdir(audio) if not n.endswith(".part")]
    assert len(written) < 12, written
    (audio / "t00000.wav.part").rmdir()
    generate_demo_library(str(tmp_path / "lib"), n_tracks=24, min_seconds=1.0, max_seconds=2.0)
    assert sorted(os.listdir(audio)) == sorted(
        f"t{i:05d}.{('wav', 'flac', 'mp3', 'ogg', 'wav')[i % 5]}" for i in range(24))
