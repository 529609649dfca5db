"""Track queries: filters against a hand-checked catalog, lazy and eager agreeing, pushdown
reading less, tile selections reading only their chunks, and clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import featurestore
from catalogs.reader import read_catalog
from catalogs.writer import write_catalog
from featurestore.expressions import QueryError
from featurestore.spec import TileEncoding
from featurestore.store import Store
from tests.helpers import cli, run_cli, write_audio

# id, film, composer, year, genres, mood, seconds (0: the file is missing)
HAND = [
    ("a1", "A Fistful of Dollars", "Ennio Morricone", 1964, "Western", "tense|dry", 10),
    ("a2", "A Fistful of Dollars", "Ennio Morricone", 1964, "Western|Drama", "tense", 10),
    ("a3", "The Good, the Bad and the Ugly", "Ennio Morricone", 1966, "Western|Adventure",
     "epic", 10),
    ("a4", "Cinema Paradiso", "Ennio Morricone", 1988, "Drama|Romance", "tender", 10),
    ("a5", "Jaws", "John Williams", 1975, "Thriller|Adventure", "tense", 10),
    ("a6", "Star Wars", "John Williams", 1977, "Sci-Fi|Adventure|Action", "epic", 10),
    ("a7", "E.T.", "John Williams", 1982, "Science Fiction|Family|Drama", "tender|epic", 20),
    ("a8", "Psycho", "Bernard Herrmann", 1960, "Thriller|Horror|Mystery", "tense|dark", 10),
    ("a9", "Vertigo", "Bernard Herrmann", 1958, "Thriller|Mystery|Romance", "dark", 10),
    ("a10", "Marnie", "Bernard Herrmann", 1964, "Drama", "", 0),
]


@pytest.fixture(scope="module")
def hand_store(tmp_path_factory, dask_client):
    """The hand-checked catalog built into a local store (chunks of 2 tiles)."""
    root = tmp_path_factory.mktemp("hand")
    os.makedirs(root / "audio")
    rows = []
    for i, (tid, film, composer, year, genres, mood, seconds) in enumerate(HAND):
        path = f"audio/{tid}.wav"
        if seconds:
            write_audio(root / path, seconds, seed=i)
        rows.append({"track_id": tid, "path": path, "film": film, "composer": composer,
                     "year": year, "genres": genres, "mood": mood,
                     # a header as spreadsheets write them, not a Python name
                     "cue type": "main title" if tid in ("a1", "a6", "a8") else "underscore"})
    catalog = write_catalog(root / "films.csv", rows)
    url = str(root / "store")
    report = featurestore.build(catalog, url, client=dask_client, progress=False,
                                encoding=TileEncoding(chunk_tiles=2))
    assert report.exit_code == 4  # a10's file is missing
    return url, catalog


def _ids(frame) -> set[str]:
    return set(frame["track_id"])


CASES = [
    (dict(composer="Ennio Morricone", year="1960:1969", genres="Western"), {"a1", "a2", "a3"}),
    (dict(genres=["Thriller", "Sci-Fi"]), {"a5", "a6", "a7", "a8", "a9"}),
    (dict(all_genres=["Thriller", "Adventure"]), {"a5"}),
    (dict(genres="Thriller", exclude_genres="Horror"), {"a5", "a9"}),
    (dict(film=["Jaws", "Psycho"]), {"a5", "a8"}),
    (dict(year=1964), {"a1", "a2", "a10"}),
    (dict(year=":1960"), {"a8", "a9"}),
    (dict(year=(1976, None)), {"a4", "a6", "a7"}),
    (dict(genres="scifi"), {"a6", "a7"}),  # an alias, normalized like the catalog
    (dict(status="missing"), {"a10"}),
    (dict(status="ok", composer="Bernard Herrmann"), {"a8", "a9"}),
    (dict(where="n_tiles >= 2"), {"a7"}),
    (dict(where="contains(composer, 'williams') and year > 1976"), {"a6", "a7"}),
    (dict(where="year // 10 == 196 and status == 'ok'"), {"a1", "a2", "a3", "a8"}),
    (dict(where="film in ['Jaws', 'Vertigo'] or isnull(mood)"), {"a5", "a9", "a10"}),
    (dict(where="`cue type` == 'main title' and year < 1970"), {"a1", "a8"}),
    (dict(where="`cue type` != 'main title' and n_tiles >= 2"), {"a7"}),
    (dict(labels="mood", genres="tense"), {"a1", "a2", "a5", "a8"}),
    (dict(labels="mood", all_genres=["tender", "epic"]), {"a7"}),
    (dict(labels="mood", exclude_genres=["tense", "dark"], composer="John Williams"),
     {"a6", "a7"}),
]


@pytest.mark.parametrize(("filters", "expected"), CASES)
def test_filters_match_the_hand_checked_catalog(hand_store, filters, expected):
    store = featurestore.open(hand_store[0])
    assert _ids(store.tracks(**filters)) == expected


def test_lazy_and_eager_paths_agree(hand_store):
    store = featurestore.open(hand_store[0])
    for filters, expected in [({}, None), *CASES]:
        eager = store.tracks(**filters)
        lazy = store.tracks(lazy=True, **filters)
        assert lazy.npartitions >= 1
        got = lazy.compute()
        key = ["catalog", "track_id"]
        pd.testing.assert_frame_equal(got.sort_values(key, ignore_index=True),
                                      eager.sort_values(key, ignore_index=True))
        if expected is not None:
            assert _ids(got) == expected
    # Projected columns come in the order asked, after the key, on both paths.
    cols = ["year", "status", "film"]
    assert list(store.tracks(columns=cols).columns) == ["catalog", "track_id", *cols]
    assert list(store.tracks(columns=cols, lazy=True).compute().columns) == [
        "catalog", "track_id", *cols]


def test_build_columns_and_metadata_in_the_rows(hand_store):
    tracks = featurestore.open(hand_store[0]).tracks().set_index("track_id")
    assert tracks.loc["a7", "n_tiles"] == 2 and tracks.loc["a1", "n_tiles"] == 1
    assert tracks.loc["a7", "genres"].tolist() == ["Sci-Fi", "Family", "Drama"]
    assert tracks.loc["a10", "status"] == "missing" and "a10.wav" in tracks.loc["a10", "error"]
    assert tracks.loc["a1", "mood"] == "tense|dry"


def test_tile_selection_reads_only_its_chunks(hand_store, tmp_path):
    url = hand_store[0]
    store = featurestore.open(url)
    everything = store.tiles().compute()
    selected = store.tiles(where="track_id == 'a7'")
    assert selected.sizes["tile"] == 2
    assert list(selected["track_id"].values) == ["a7", "a7"]
    assert list(selected["offset"].values) == [0, 1]
    start = int(store.tracks(where="track_id == 'a7'")["tile_start"].iloc[0])
    chunks = {start // 2, (start + 1) // 2}
    # Corrupt every other chunk of a copy: the selection still computes, so it never read them.
    copy = str(tmp_path / "copy")
    shutil.copytree(url, copy)
    chunk_dir = os.path.join(featurestore.open(copy).feature_set().tiles_url, "mfcc", "c")
    corrupted = 0
    for name in os.listdir(chunk_dir):
        if int(name) not in chunks:
            for dirpath, _, files in os.walk(os.path.join(chunk_dir, name)):
                for f in files:
                    with open(os.path.join(dirpath, f), "wb") as out:
                        out.write(b"not a zstd frame")
                    corrupted += 1
    assert corrupted >= 4
    values = featurestore.open(copy).tiles(where="track_id == 'a7'").values
    np.testing.assert_array_equal(values, everything.values[everything["track_id"] == "a7"])
    # and a full read does hit the corrupted chunks: the codec refuses them
    with pytest.raises(RuntimeError, match="blosc decompression"):
        featurestore.open(copy).tiles().values


def test_tiles_from_a_lazy_selection(hand_store):
    store = featurestore.open(hand_store[0])
    lazy = store.tracks(lazy=True, genres="Western")
    tiles = store.tiles(lazy)
    assert sorted(set(tiles["track_id"].values)) == ["a1", "a2", "a3"]
    assert tiles.sizes["tile"] == 3


def test_clear_errors_for_unknown_columns_and_bad_expressions(hand_store):
    store = featurestore.open(hand_store[0])
    with pytest.raises(QueryError, match=r"unknown column 'tempo'.*composer"):
        store.tracks(where="tempo > 120")
    with pytest.raises(QueryError, match="not a valid expression"):
        store.tracks(where="year >")
    with pytest.raises(QueryError, match="goes in backticks, `cue type` .in a shell, put"):
        store.tracks(where="cue type == 'main title'")
    # what bash leaves of --where "`cue type` == ...", having run the backticks as a command
    with pytest.raises(QueryError, match="the shell ran it as a command; put the whole"):
        store.tracks(where=" == 'main title'")
    with pytest.raises(QueryError, match=r"did you mean 'cue type' \(in backticks, `cue type`"):
        store.tracks(where="cue_type == 'main title'")
    with pytest.raises(QueryError, match="did you mean 'composer'"):
        store.tracks(where="compser == 'x'")
    with pytest.raises(QueryError, match="unknown function"):
        store.tracks(where="__import__('os').system('true')")
    with pytest.raises(QueryError, match="'tempo'"):
        store.tracks(columns=["tempo"])
    assert list(store.tracks(columns="film").columns) == ["catalog", "track_id", "film"]
    # values of other types, and a status no track can have, are the query's error
    with pytest.raises(QueryError, match=r"--where \"year > '1990'\": the types do not fit: "
                                         "a number is compared with text"):
        store.tracks(where="year > '1990'")
    for where in ("genres == 'Drama'", "contains(genres, 'dram')"):  # a list is not a value
        with pytest.raises(QueryError, match="a list column .* filter labels with --genre"):
            store.tracks(where=where)
    with pytest.raises(QueryError, match="status 'okk': choose among ok, pending"):
        store.tracks(status="okk")
    with pytest.raises(featurestore.StoreError, match="is not a feature store"):
        featurestore.open(os.path.join(hand_store[0], "featurestore.json"))  # a file
    with pytest.raises(QueryError, match="no label column 'tempo'"):
        store.tracks(labels="tempo", genres="fast")
    with pytest.raises(QueryError, match="no label column 'tempo'"):  # not silently ignored
        store.tracks(labels="tempo")
    with pytest.raises(QueryError, match="1969:1960"):
        store.tracks(year="1969:1960")
    with pytest.raises(featurestore.StoreError, match="no catalog 'nope'"):
        store.tracks(catalog="nope")


def test_pushdown_reads_fewer_row_groups_and_bytes(tmp_path):
    """A 20,000-row catalog: a composer filter reads one row group of five, and the process
    reads a fraction of the bytes a full read does (counted by the kernel, /proc/self/io)."""
    rng = np.random.default_rng(0)
    n = 20_000
    composers = [f"Composer {i:03d}" for i in range(100)]
    frame = pd.DataFrame({
        "track_id": pd.array([f"t{i:06d}" for i in range(n)], dtype="string"),
        "path": pd.array([f"/audio/t{i:06d}.mp3" for i in range(n)], dtype="string"),
        "title": pd.array([f"Cue {i}" for i in range(n)], dtype="string"),
        "film": pd.array([f"Film {i // 10}" for i in range(n)], dtype="string"),
        "composer": pd.array(rng.choice(composers, n), dtype="string"),
        "year": pd.array(rng.integers(1930, 2020, n), dtype="Int64"),
        "genres": [["Drama", "Thriller"][: 1 + i % 2] for i in range(n)],
        "notes": [rng.bytes(150).hex() for _ in range(n)],  # incompressible, like real text
    })
    store = Store(str(tmp_path / "store"))
    store.initialize()
    store.write_catalog("big", frame)
    plan = store.explain(composer="Composer 042")
    assert plan.row_groups_total == 5 and plan.row_groups_read == 1
    assert plan.bytes_read < plan.bytes_total / 4
    projected = store.explain(columns=["year"])
    assert projected.bytes_read < plan.bytes_total / 10

    def rchar() -> int:
        with open("/proc/self/io") as f:
            return int(next(line for line in f if line.startswith("rchar")).split()[1])

    store.tracks(composer="Composer 000")  # warm imports and caches
    before = rchar()
    full = store.tracks()
    full_bytes = rchar() - before
    before = rchar()
    some = store.tracks(composer="Composer 042")
    filtered_bytes = rchar() - before
    assert len(some) == (frame["composer"] == "Composer 042").sum() > 0
    assert set(some["track_id"]) == set(full.loc[full["composer"] == "Composer 042",
                                                 "track_id"])
    assert filtered_bytes < full_bytes / 3, (filtered_bytes, full_bytes)


def test_memory_store_answers_like_a_local_one(hand_store):
    url, catalog = hand_store
    mem = "memory://queries-test/store"
    featurestore.build(read_catalog(catalog, "films"), mem, progress=False)
    local, remote = featurestore.open(url), featurestore.open(mem)
    for filters, expected in CASES[:6] + CASES[11:15]:
        assert _ids(remote.tracks(**filters)) == _ids(local.tracks(**filters)) == expected
        # memory:// lives in this process: compute here, not on the session's cluster
        assert _ids(remote.tracks(lazy=True, **filters).compute(scheduler="threads")) == expected
    a = remote.tiles(genres="Western").compute(scheduler="threads").values
    b = local.tiles(genres="Western").values
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)  # thread vs process BLAS


def test_cli_tracks_formats_and_errors(hand_store, tmp_path):
    url = hand_store[0]
    res = subprocess.run(cli("tracks", "--store", url, "--composer", "Ennio Morricone",
                             "--year", "1960:1969", "--genre", "Western", "--format", "csv",
                             "--columns", "film,year,genres"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "catalog,track_id,film,year,genres"
    assert sorted(line.split(",")[1] for line in lines[1:]) == ["a1", "a2", "a3"]
    assert any(line.endswith(",Western|Drama") for line in lines)

    out = tmp_path / "sel.parquet"
    res = subprocess.run(cli("tracks", "--store", url, "--where", "n_tiles >= 1", "--lazy",
                             "--format", "parquet", "--output", str(out)),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert set(pq.read_table(out).column("track_id").to_pylist()) == {
        f"a{i}" for i in range(1, 10)}

    res = subprocess.run(cli("tracks", "--store", url, "--status", "missing", "--format",
                             "json"), capture_output=True, text=True, timeout=120)
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["track_id"] for r in rows] == ["a10"] and rows[0]["genres"] == ["Drama"]

    res = subprocess.run(cli("tracks", "--store", url, "--where", "bpm > 100"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "unknown column 'bpm'" in res.stderr


def test_cli_refuses_bad_counts_and_says_why_an_answer_is_empty(hand_store, capsys):
    url = hand_store[0]
    # --limit -3 would have read as "all but the last three": refused, as argparse refuses
    for args in (["--limit", "-3"], ["--limit", "0"], ["--limit", "two"]):
        with pytest.raises(SystemExit) as stop:
            run_cli(capsys, "tracks", "--store", url, *args)
        assert stop.value.code == 2
        assert f"argument --limit: '{args[1]}' is not an integer >= 1" in capsys.readouterr().err

    # A misspelt genre: the header, no rows, and a warning that names it (not the film's)
    res = run_cli(capsys, "tracks", "--store", url, "--genre", "Westren", "--genre", "Drama",
                  "--film", "No Such Film", "--columns", "film")
    assert res.returncode == 0
    assert res.stdout == "catalog track_id film\n"
    assert "warning: no track has the label 'Westren' in column 'genres'" in res.stderr
    assert "'Drama'" not in res.stderr and "0 tracks" in res.stderr
    assert "warning: no track has film 'No Such Film'" in res.stderr
    res = run_cli(capsys, "tracks", "--store", url, "--genre", "Drama", "--where", "year < 0")
    assert "warning" not in res.stderr  # every label exists: the other filters emptied it
    # a misspelt film or composer is named too, with the closest one held
    res = run_cli(capsys, "tracks", "--store", url, "--film", "Cinema Paradisso", "--composer",
                  "Nobody")
    assert ("warning: no track has film 'Cinema Paradisso' (did you mean 'Cinema Paradiso'?)"
            in res.stderr)
    assert "warning: no track has composer 'Nobody'\n" in res.stderr
    res = run_cli(capsys, "tracks", "--store", url, "--all-genres", "Drama", "--all-genres",
                  "Westren", "--lazy")
    assert "warning: no track has the label 'Westren'" in res.stderr and "0 tracks" in res.stderr
    # the same from Python, as a warning of its own kind
    store = featurestore.open(url)
    with pytest.warns(featurestore.UnheldLabelWarning,
                      match="no track has the label 'Westren' in column 'genres'"):
        assert store.tracks(genres=["Westren", "Drama"], where="year < 0").empty
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.tracks(genres="Drama", where="year < 0").empty
        store.tracks(genres=["Westren", "Drama"])  # an answer: no second scan, no warning


def test_cli_files_named_by_options_are_the_options_errors(hand_store, tmp_path, capsys):
    # exit code 2 naming the option, not 5 blaming the store the command only read
    url = hand_store[0]
    before = featurestore.open(url).tracks()
    (tmp_path / "afile").write_text("")
    for args, words in (
            (["tracks", "-o", str(tmp_path / "no" / "x.csv")],
             f"--output {tmp_path / 'no' / 'x.csv'}: No such file or directory"),
            (["tracks", "-o", str(tmp_path)], f"--output {tmp_path}: Is a directory"),
            (["stats", "--plots", str(tmp_path / "afile")], f"--plots {tmp_path / 'afile'}: "),
            (["build", str(tmp_path / "afile"), "--spec", str(tmp_path / "afile")],
             f"--spec {tmp_path / 'afile'}: not a JSON feature spec")):
        res = run_cli(capsys, *args, "--store", url)
        assert (res.returncode, res.stderr.splitlines()[-1][:len(words) + 7]) == (
            2, f"error: {words}"), res.stderr
    pd.testing.assert_frame_equal(featurestore.open(url).tracks(), before)


def test_cli_output_format_follows_the_file_name(hand_store, tmp_path, capsys):
    url = hand_store[0]
    expected = featurestore.open(url).tracks(columns=["film"])
    for name, read in (("x.parquet", pd.read_parquet), ("x.CSV", pd.read_csv),
                       ("x.jsonl", lambda f: pd.read_json(f, lines=True))):
        res = run_cli(capsys, "tracks", "--store", url, "--columns", "film", "-o",
                      str(tmp_path / name))
        assert res.returncode == 0, res.stderr
        assert read(tmp_path / name)["film"].tolist() == expected["film"].tolist()
    # no known extension: the default table; --format wins where the name says nothing
    res = run_cli(capsys, "tracks", "--store", url, "-o", str(tmp_path / "x.txt"), "--limit", "1")
    assert res.stderr == "1 track\n"
    assert (tmp_path / "x.txt").read_text().split()[:2] == ["catalog", "track_id"]
    run_cli(capsys, "tracks", "--store", url, "--format", "csv", "-o", str(tmp_path / "y.txt"))
    assert (tmp_path / "y.txt").read_text().startswith("catalog,track_id,")
    # a format the name contradicts is refused before anything is written
    res = run_cli(capsys, "tracks", "--store", url, "--format", "csv", "-o",
                  str(tmp_path / "z.parquet"))
    assert res.returncode == 2 and not (tmp_path / "z.parquet").exists()
    assert (f"--format csv contradicts --output {tmp_path / 'z.parquet'}, whose name says "
            "parquet") in res.stderr


def test_cli_empty_or_inapplicable_values_are_refused_not_defaulted(hand_store, capsys):
    url, catalog = hand_store
    before = featurestore.open(url).tracks()
    for args, words in ((["tracks", "--columns", ""], "unknown column(s) ''"),
                        (["build", catalog, "--catalog", ""], "catalog name ''"),
                        (["build", catalog, "--kind", "logmel", "--n-mfcc", "20"],
                         "FeatureSpec.n_mfcc shapes MFCC only: a logmel set has n_mels bands")):
        res = run_cli(capsys, *args, "--store", url)
        assert res.returncode == 2 and words in res.stderr, res.stderr
    with pytest.raises(SystemExit) as refused:  # not "every label"
        run_cli(capsys, "train", "--store", url, "--name", "x", "--labels", ",")
    assert refused.value.code == 2 and "',' names nothing" in capsys.readouterr().err
    pd.testing.assert_frame_equal(featurestore.open(url).tracks(), before)


def test_cli_info(hand_store):
    res = subprocess.run(cli("info", "--store", hand_store[0], "--format", "json"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    (cat,) = info["catalogs"]
    assert (cat["name"], cat["tracks"], cat["ok"], cat["failed"]) == ("films", 10, 9, 1)
    assert cat["failures"] == {"missing": 1}
    assert cat["tiles"] == info["tiles"] == 10
    assert abs(cat["hours"] - 100 / 3600) < 1e-3
    assert len(info["feature_sets"]) == 1 and info["feature_sets"][0]["tiles"] == 10
    assert info["bytes"] > info["feature_sets"][0]["bytes"] > 0
