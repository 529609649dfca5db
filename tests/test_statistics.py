"""Catalog statistics against values worked out by hand, label columns, plots and the CLI."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest

from catalogs import statistics
from catalogs.labels import LabelColumnError, label_lists
from catalogs.plots import write_plots
from tests.helpers import cli, copy_demo_library, run_cli

# t4 is not built yet: it counts as a track, with no tiles and no hours.
FRAME = pd.DataFrame({
    "track_id": ["t1", "t2", "t3", "t4"],
    "genres": [["A", "B"], ["A"], ["B", "C"], ["A", "B", "C"]],
    "mood": ["calm|dark", "calm", None, "dark"],
    "year": pd.array([1960, 1970, 1980, 1990], dtype="Int64"),
    "n_tiles": [2, 1, 3, 0],
    "duration_s": [20.0, 10.0, 30.0, np.nan],
})


def test_membership_by_hand():
    table = statistics.membership(FRAME)
    assert list(table.index) == ["A", "B", "C"]  # A and B tie on 3 tracks: by name
    assert table.loc["A"].tolist() == pytest.approx([3, 0.75, 3, 30 / 3600])
    assert table.loc["B"].tolist() == pytest.approx([3, 0.75, 5, 50 / 3600])
    assert table.loc["C"].tolist() == pytest.approx([2, 0.5, 3, 30 / 3600])


def test_bigrams_and_cooccurrence_by_hand():
    pairs = statistics.bigrams(FRAME)
    assert [tuple(r) for r in pairs.itertuples(index=False)] == [
        ("A", "B", 2), ("B", "C", 2), ("A", "C", 1)]
    table = statistics.cooccurrence(FRAME)
    assert np.diag(table.to_numpy()).tolist() == [3, 3, 2]
    assert table.loc["A", "B"] == table.loc["B", "A"] == 2 and table.loc["A", "C"] == 1


def test_years_and_labels_per_track_by_hand():
    years = statistics.year_by_label(FRAME)
    assert years.loc["A", "mean"] == pytest.approx((1960 + 1970 + 1990) / 3)
    assert years.loc["A", "std"] == pytest.approx(np.std([1960, 1970, 1990], ddof=1))
    assert years.loc["C", "mean"] == 1985 and years.loc["C", "tracks"] == 2
    assert list(years.index) == ["C", "B", "A"]  # newest mean first
    per_track = statistics.labels_per_track(FRAME)
    assert per_track.to_dict() == {1: 1, 2: 2, 3: 1} and per_track.attrs["mean"] == 2.0


def test_class_selection_balances_to_the_smallest_kept_class():
    table = statistics.class_selection(FRAME, min_tracks=3)
    assert table["kept"].to_dict() == {"A": True, "B": True, "C": False}
    assert table["balanced_tiles"].to_dict() == {"A": 3, "B": 3, "C": 0}
    assert table.attrs == {"per_class": 3, "kept_classes": 2, "tiles_kept": 6,
                           "tiles_available": 8}
    assert statistics.class_selection(FRAME, min_tracks=10).attrs["kept_classes"] == 0


def test_any_string_column_serves_as_labels():
    assert label_lists(FRAME, "mood").tolist() == [["calm", "dark"], ["calm"], [], ["dark"]]
    table = statistics.membership(FRAME, "mood")
    assert table["tracks"].to_dict() == {"calm": 2, "dark": 2}
    assert table.loc["dark", "tiles"] == 2  # t4 (dark) has no tiles yet
    assert [tuple(r) for r in statistics.bigrams(FRAME, "mood").itertuples(index=False)] == [
        ("calm", "dark", 1)]
    with pytest.raises(LabelColumnError, match="'tempo'.*genres"):
        statistics.membership(FRAME, "tempo")


def test_plots_are_written(tmp_path):
    paths = write_plots(FRAME, str(tmp_path / "plots"))
    assert [os.path.basename(p) for p in paths] == ["membership.png", "bigrams.png",
                                                     "years.png"]
    for path in paths:
        with open(path, "rb") as f:
            head = f.read(8)
        assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 5000


def test_cli_stats_on_the_demo_library(tmp_path, demo_library, capsys):
    """The demo library's statistics through the command line, checked against the tracks."""
    lib = str(tmp_path / "demo")
    # the session's cues copied in: the demo command keeps them and writes its catalog
    copy_demo_library(demo_library, lib, n_tracks=20)
    res = subprocess.run(cli("demo", "--dir", lib, "--tracks", "20", "--no-progress",
                             "--workers", "1"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    store = os.path.join(lib, "store")
    res = run_cli(capsys, "stats", "--store", store, "--min-tracks", "4", "--format", "json",
                  "--plots", str(tmp_path / "plots"))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    catalog = pd.read_csv(os.path.join(lib, "catalog.csv"))
    genres = catalog["genres"].str.split("|")
    assert out["tracks"] == 20
    counts = genres.explode().value_counts().to_dict()
    assert {r["genres"]: r["tracks"] for r in out["membership"]} == counts
    assert out["mean_labels_per_track"] == pytest.approx(genres.map(len).mean())
    kept = {g for g, n in counts.items() if n >= 4}
    assert {r["genres"] for r in out["selection"] if r["kept"]} == kept
    assert len(os.listdir(tmp_path / "plots")) == 3
    # A selection: statistics of the tracks without Drama.
    res = run_cli(capsys, "stats", "--store", store, "--exclude-genre", "Drama", "--format",
                  "json")
    out = json.loads(res.stdout)
    assert out["tracks"] == int((~genres.map(lambda g: "Drama" in g)).sum())
    assert "Drama" not in {r["genres"] for r in out["membership"]}
    # the text form: the label column heads each table; labels per track in words
    res = run_cli(capsys, "stats", "--store", store)
    lines = res.stdout.splitlines()
    assert lines[1].split()[:2] == ["genres", "tracks"], lines[:3]
    sizes = genres.map(len).value_counts().sort_index()
    assert (f"labels per track (mean {genres.map(len).mean():.2f}): "
            + ", ".join(f"{n} on {k}" for n, k in sizes.items()) + " tracks") in lines
    res = run_cli(capsys, "stats", "--store", store, "--labels", "nope")
    assert res.returncode == 2 and "label column 'nope'" in res.stderr
