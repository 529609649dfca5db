"""Batch scoring: scores equal the model's, rankings follow scores, runs are incremental and
atomic (killed runs, concurrent readers), skipped tracks are reported, metrics are
scikit-learn's, and the CLI answers the recommendation queries."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import signal
import subprocess
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import (average_precision_score, coverage_error,
                             label_ranking_average_precision_score, label_ranking_loss)

import featurestore
from catalogs.writer import write_catalog
from featurestore.parquet_files import parquet_bytes
from featurestore.urls import atomic_write
from scoring import (best_tracks, evaluate, label_answer, ranking_quality, score,
                     track_rankings)
from scoring.aggregate import aggregate, ranking_rows, ranks
from scoring.evaluate import format_figure
from scoring.report import markdown
from scoring.score_tables import KEY, score_table, scores, tile_scores
from training import TrainConfig, TrainingError, train
from training.metrics import average_precision, label_precision, per_class, ranking_metrics
from training.model_files import ModelFiles
from tests.helpers import cli, cli_modules, run_cli, wait_for, write_audio

MODEL = "ens"
LINEAGE = ["run_id", "scored_at", "tiles_part"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_library, demo_store):
    """The demo library built (chunks of 8 tiles: a copy of the session's demo store) with a
    briefly trained ensemble; tests score copies of it."""
    root = tmp_path_factory.mktemp("scoring")
    url = _copy_store(demo_store, root)
    report = train(url, MODEL, TrainConfig(arch="ensemble", epochs=2, patience=2,
                                           optimizer="adam", learning_rate=1e-3, min_tracks=6,
                                           test_size=0.25), progress=False)
    # a row per member and epoch in the history; the summary counts epochs
    assert len(report.history) == 2 * len(report.classes) and "; 2 epochs;" in report.summary()
    return {"store": url, "catalog": demo_library, "root": root}


def _copy_store(source: str, directory) -> str:
    """A copy of the store at ``source`` as ``directory/store``; its URL."""
    url = str(directory / "store")
    shutil.copytree(source, url)
    return url


@pytest.fixture
def store_copy(trained, tmp_path):
    return _copy_store(trained["store"], tmp_path)


def _rankings(url: str) -> pd.DataFrame:
    frame = scores(featurestore.open(url), MODEL)
    return frame.drop(columns=LINEAGE).sort_values([*KEY, "label"]).reset_index(drop=True)


def _embeddings(url: str) -> pd.DataFrame:
    """The committed embeddings file as any Parquet reader sees it, one row per track."""
    frame = pd.read_parquet(score_table(featurestore.open(url), MODEL).embeddings_path)
    assert not frame.duplicated(KEY).any()
    return frame.drop(columns=["run_id", "scored_at"]).sort_values(KEY).reset_index(drop=True)


def _assert_same_embeddings(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got.drop(columns="embedding"),
                                  expected.drop(columns="embedding"))
    np.testing.assert_allclose(np.stack(got["embedding"]), np.stack(expected["embedding"]),
                               atol=1e-5)


def test_aggregation_and_ranks_by_hand():
    tiles = np.array([[0.1, 0.9], [0.3, 0.5], [0.8, 0.2],   # track a: 3 tiles
                      [0.4, 0.4]], dtype=np.float32)         # track b: 1 tile
    np.testing.assert_allclose(aggregate(tiles, [3, 1], "mean"),
                               [[0.4, 1.6 / 3], [0.4, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(aggregate(tiles, [3, 1], "max"), [[0.8, 0.9], [0.4, 0.4]])
    np.testing.assert_allclose(aggregate(tiles, [3, 1], "median"), [[0.3, 0.5], [0.4, 0.4]])
    with pytest.raises(ValueError, match="counts"):
        aggregate(tiles, [2, 1])
    with pytest.raises(ValueError, match="choose one of"):
        aggregate(tiles, [3, 1], "mode")
    # ties keep label order
    np.testing.assert_array_equal(ranks(np.array([[0.2, 0.7, 0.2, 0.9]])), [[3, 2, 4, 1]])
    rows = ranking_rows(pd.DataFrame({"track_id": ["a", "b"]}),
                        np.array([[0.2, 0.7, 0.1], [0.5, 0.1, 0.9]]), ["X", "Y", "Z"])
    assert rows["label"].tolist() == ["Y", "X", "Z", "Z", "X", "Y"]
    assert rows["rank"].tolist() == [1, 2, 3, 1, 2, 3]
    assert rows["track_id"].tolist() == ["a"] * 3 + ["b"] * 3


def test_metrics_equal_scikit_learn_on_a_known_case():
    truth = np.array([[1, 0, 0], [0, 0, 1]])
    scores = np.array([[0.75, 0.5, 1.0], [1.0, 0.2, 0.1]])
    m = ranking_metrics(truth, scores)
    # the values of scikit-learn's own documentation examples
    assert m["lrap"] == pytest.approx(0.416666, abs=1e-5)
    assert m["coverage_error"] == pytest.approx(2.5)
    assert m["label_ranking_loss"] == pytest.approx(0.75)
    assert m["coverage_lower_bound"] == 1.0 and m["samples"] == 2
    report = per_class(truth, scores, ["a", "b", "c"], k=2)
    # top 2: row 0 -> {c, a}, row 1 -> {a, b}
    assert report["classes"]["a"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert report["classes"]["b"]["precision"] == 0.0 and report["classes"]["b"]["support"] == 0
    assert report["classes"]["c"]["f1"] == 0.0
    assert report["micro"] == pytest.approx({"precision": 0.25, "recall": 0.5, "f1": 1 / 3})
    # average precision, written out to spare the queries scikit-learn's import, is its
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(2, 40))
        relevant = np.r_[True, False, rng.random(n) < 0.3]
        ranked = rng.random(n + 2).astype(np.float32 if trial % 2 else np.float64)
        if trial % 3 == 0:
            ranked = np.round(ranked * 4) / 4  # ties enter together
        assert average_precision(relevant, ranked) == pytest.approx(
            average_precision_score(relevant, ranked), abs=1e-12)
    # a tie holding one of two relevant samples: precision 1/2 there, then 2/3
    assert average_precision(np.array([0, 1, 1]), np.array([0.9, 0.9, 0.1])) == pytest.approx(
        0.5 * 1 / 2 + 0.5 * 2 / 3)
    # rows without any true label are left out, as a ranking of nothing is undefined
    assert ranking_metrics(np.vstack([truth, [0, 0, 0]]),
                           np.vstack([scores, [0.1, 0.2, 0.3]]))["samples"] == 2


def _staged_rows(ids: list[str], labels: list[str], run: str, seed: int) -> pd.DataFrame:
    scores = np.random.default_rng(seed).random((len(ids), len(labels)), dtype=np.float32)
    keys = pd.DataFrame({"catalog": "lib", "track_id": ids, "n_tiles": 1,
                         "content_hash": [f"h{seed}-{t}" for t in ids],
                         "cross_fitted": [i % 2 == 0 for i in range(len(ids))]})
    return ranking_rows(keys, scores, labels).assign(
        model=MODEL, version="v", feature_set="f", aggregate="mean", run_id=run,
        scored_at=pd.Timestamp.now(tz="UTC"))


def test_commit_merges_label_by_label_into_one_sorted_file(tmp_path):
    """The commit's result, checked against the same merge done plainly in pandas: kept,
    dropped, replaced and twice-staged tracks; sorted by label then best score; row groups
    that each hold one label (the "best tracks for a label" query reads only its own)."""
    import pyarrow.parquet as pq

    from scoring.score_tables import TILE_SCHEMA, ScoreTable
    from featurestore.store import Store

    labels = ["Drama", "Action", "Sci-Fi"]
    store = Store(str(tmp_path / "store"))
    store.initialize()
    table = ScoreTable(store, MODEL, "v")
    first = _staged_rows([f"t{i:02d}" for i in range(40)], labels, "r1", 1)
    empty_tiles = TILE_SCHEMA.empty_table().to_pandas()
    table.write_batch("r1", 0, first, empty_tiles)
    assert table.commit(table.staged_files(), keep=None, replace=False) == 1
    table.clean()
    # run 2: t00-t04 rescored in two batches (the second must win), t40-t44 new; t35-t39 gone
    again = _staged_rows([f"t{i:02d}" for i in range(5)], labels, "r2", 2)
    last = _staged_rows([f"t{i:02d}" for i in [*range(5), *range(40, 45)]], labels, "r2", 3)
    table.write_batch("r2", 0, again, empty_tiles)
    table.write_batch("r2", 1, last, empty_tiles)
    keep = pd.DataFrame({"catalog": "lib", "track_id": [f"t{i:02d}" for i in range(35)]})
    assert table.commit(table.staged_files(), keep=keep, replace=False) == 2

    expected = pd.concat([first[first["track_id"].isin([f"t{i:02d}" for i in range(5, 35)])],
                          last], ignore_index=True)
    got = table.rankings()
    assert len(got) == 40 * len(labels) and not got.duplicated([*KEY, "label"]).any()
    order = got.sort_values(["label", "score", "catalog", "track_id"],
                            ascending=[True, False, True, True], kind="stable")
    assert got.index.equals(order.index)
    columns = [*KEY, "label", "score", "rank", "content_hash", "cross_fitted", "run_id"]
    pd.testing.assert_frame_equal(
        got[columns].sort_values([*KEY, "label"]).reset_index(drop=True),
        expected[columns].sort_values([*KEY, "label"]).reset_index(drop=True),
        check_dtype=False)
    meta = pq.ParquetFile(table.rankings_path).metadata
    index = meta.schema.names.index("label")
    groups = [meta.row_group(g).column(index).statistics for g in range(meta.num_row_groups)]
    assert [g.min for g in groups] == [g.max for g in groups] == sorted(labels)
    # replace: only this run's rows remain
    table.clean()
    table.write_batch("r3", 0, again, empty_tiles)
    assert table.commit(table.staged_files(), keep=None, replace=True) == 3
    assert sorted(table.rankings()["track_id"].unique()) == [f"t{i:02d}" for i in range(5)]
    # a batch staged without the cross_fitted column (by a run killed before it existed)
    # commits beside a batch with it: its rows read as unknown
    table.clean()
    older = _staged_rows(["t50", "t51"], labels, "r4", 4).drop(columns="cross_fitted")
    table.write_batch("r4", 0, _staged_rows(["t60"], labels, "r4", 5), empty_tiles)
    atomic_write(table.fs, table.staged_path("r4", 1), parquet_bytes(older.assign(
        tiles_part="tiles/r4/00001.parquet")))
    assert table.commit(table.staged_files(), keep=None, replace=True) == 4
    flags = table.rankings().groupby("track_id")["cross_fitted"].first()
    assert flags.isna().tolist() == [True, True, False] and flags["t60"]


def test_scores_are_the_models_and_rankings_follow_them(store_copy, dask_client):
    report = score(store_copy, MODEL, client=dask_client, progress=False, batch_tiles=16)
    store = featurestore.open(store_copy)
    tracks = store.tracks(status="ok")
    assert report.scored == len(tracks) == 48 and report.tiles == tracks["n_tiles"].sum()
    assert 1 <= report.model_loads <= 2  # once per worker process, not once per task
    assert report.commit == 1 and not report.skipped

    # Tile scores are the model's own outputs on the stored tiles: the sigmoid of its logits,
    # computed here by the plain forward pass in one batch.
    import torch

    files = ModelFiles(store, MODEL)
    config = files.read_config()
    classes = config["classes"]
    tiles = store.tiles(tracks)
    with torch.inference_mode():
        expected = torch.sigmoid(files.load_model().eval()(
            torch.from_numpy(tiles.values.astype(np.float32))[:, None])).numpy()
    stored = tile_scores(store, MODEL)
    key = pd.MultiIndex.from_arrays([tiles["catalog"].values, tiles["track_id"].values,
                                     tiles["offset"].values])
    stored = stored.set_index(["catalog", "track_id", "offset"]).loc[key]
    np.testing.assert_allclose(stored[classes].to_numpy(), expected, atol=1e-5)

    # Track scores are the mean of their tiles; ranks follow scores.
    rankings = scores(store, MODEL)
    assert len(rankings) == 48 * len(classes)
    by_tile = stored.groupby(level=["catalog", "track_id"])[classes].mean()
    for (catalog, track_id), rows in rankings.groupby(KEY):
        assert sorted(rows["rank"]) == list(range(1, len(classes) + 1))
        ordered = rows.sort_values("rank")
        assert (np.diff(ordered["score"].to_numpy()) <= 0).all()
        np.testing.assert_allclose(
            rows.set_index("label").loc[classes, "score"].to_numpy(),
            by_tile.loc[(catalog, track_id)].to_numpy(), atol=1e-6)
    assert set(rankings["version"]) == {files.version()}
    assert set(rankings["feature_set"]) == {config["feature_set"]}
    assert set(rankings["run_id"]) == {report.run_id}

    # The committed file is plain Parquet, readable without our code.
    path = score_table(store, MODEL).rankings_path
    assert len(pd.read_parquet(path)) == len(rankings)

    # One embedding per track: the mean over its tiles of the members' last hidden layers,
    # side by side, computed here by the plain (unfused) ensemble.
    model = files.load_model()
    with torch.inference_mode():
        hidden = model.outputs(torch.from_numpy(tiles.values.astype(np.float32))[:, None])[1]
    by_hand = pd.DataFrame(hidden.numpy()).groupby(
        [tiles["catalog"].values, tiles["track_id"].values]).mean()
    stored = _embeddings(store_copy)
    assert len(stored) == 48 and set(stored["version"]) == {files.version()}
    expected = by_hand.loc[pd.MultiIndex.from_frame(stored[KEY])].to_numpy()
    assert expected.shape[1] == 10 * 50
    np.testing.assert_allclose(np.stack(stored["embedding"]), expected, atol=1e-5)
    assert set(stored["content_hash"]) == set(tracks["content_hash"])

    # Incremental: the second run scores nothing and says so.
    again = score(store_copy, MODEL, client=dask_client, progress=False)
    assert again.scored == 0 and again.up_to_date == 48 and again.commit == 0
    assert "nothing to do" in again.summary()
    assert score_table(store, MODEL).seq() == 1

    # The same scores evaluated here equal the training run's own test metrics.
    ev = evaluate(store_copy, MODEL)
    assert ev.track["lrap"] == pytest.approx(config["metrics"]["track_lrap"], abs=1e-5)
    assert ev.tile["lrap"] == pytest.approx(config["metrics"]["tile_lrap"], abs=1e-5)
    assert ev.track["coverage_error"] == pytest.approx(
        config["metrics"]["track_coverage_error"], abs=1e-5)
    assert ev.track["label_precision"]["mean"] == pytest.approx(
        config["metrics"]["track_label_ap"], abs=1e-5)
    # ... and equal scikit-learn on the stored scores and the catalog's labels.
    test = files.read_frame("split.parquet").query("side == 'test'")
    wide = rankings.pivot_table(index=KEY, columns="label", values="score")[classes]
    wide = wide.loc[pd.MultiIndex.from_frame(test[KEY])]
    genres = store.tracks().set_index(KEY).loc[wide.index, "genres"]
    truth = np.array([[c in g for c in classes] for g in genres], dtype=int)
    assert ev.track["lrap"] == pytest.approx(
        label_ranking_average_precision_score(truth, wide.to_numpy()), abs=1e-6)
    assert ev.track["coverage_error"] == pytest.approx(coverage_error(truth, wide.to_numpy()))
    assert ev.track["label_ranking_loss"] == pytest.approx(
        label_ranking_loss(truth, wide.to_numpy()))
    assert ev.track["coverage_lower_bound"] == pytest.approx(truth.sum(1).mean())


def test_incremental_new_changed_and_removed_tracks(store_copy, trained, dask_client):
    score(store_copy, MODEL, client=dask_client, progress=False)
    before = _rankings(store_copy)
    embedded = _embeddings(store_copy)
    lib = os.path.dirname(trained["catalog"])
    catalog = pd.read_csv(trained["catalog"])
    # remove t00001, change t00002's audio, add two tracks
    work = os.path.join(os.path.dirname(store_copy), "lib")
    shutil.copytree(lib, work)
    catalog = catalog[catalog["track_id"] != "t00001"]
    changed = catalog.loc[catalog["track_id"] == "t00002", "path"].iloc[0]
    write_audio(os.path.join(work, changed), seconds=25.0, seed=99,
                kind={"wav": "wav", "flac": "flac", "mp3": "mp3", "ogg": "ogg"}[
                    changed.rsplit(".", 1)[1]])
    write_audio(os.path.join(work, "audio/new1.wav"), seconds=20.0, seed=5)
    write_audio(os.path.join(work, "audio/new2.wav"), seconds=30.0, seed=6)
    extra = pd.DataFrame([{"track_id": "n1", "path": "audio/new1.wav", "film": "New",
                           "genres": "Drama"},
                          {"track_id": "n2", "path": "audio/new2.wav", "film": "New",
                           "genres": "Thriller"}])
    pd.concat([catalog, extra]).to_csv(os.path.join(work, "catalog.csv"), index=False)
    featurestore.build(os.path.join(work, "catalog.csv"), store_copy, name="demo",
                       client=dask_client, progress=False)

    report = score(store_copy, MODEL, client=dask_client, progress=False)
    assert report.scored == 3 and report.up_to_date == 46 and report.dropped == 1
    after = _rankings(store_copy)
    assert set(after["track_id"]) == set(before["track_id"]) - {"t00001"} | {"n1", "n2"}
    same = ~after["track_id"].isin(["t00002", "n1", "n2"])
    kept = before[~before["track_id"].isin(["t00001", "t00002"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(after[same].reset_index(drop=True), kept)
    new_hash = featurestore.open(store_copy).tracks(where="track_id == 't00002'")[
        "content_hash"].iloc[0]
    assert set(after.loc[after["track_id"] == "t00002", "content_hash"]) == {new_hash}
    # embeddings follow: the unchanged tracks' as they were, the changed and new ones' from
    # their current audio, the removed one's gone; a stale embedding is never served
    after_embedded = _embeddings(store_copy)
    assert set(after_embedded["track_id"]) == set(after["track_id"])
    unchanged = ~embedded["track_id"].isin(["t00001", "t00002"])
    _assert_same_embeddings(
        after_embedded[after_embedded["track_id"].isin(embedded.loc[unchanged, "track_id"])]
        .reset_index(drop=True), embedded[unchanged].reset_index(drop=True))
    assert set(after_embedded.loc[after_embedded["track_id"] == "t00002",
                                  "content_hash"]) == {new_hash}
    # tile scores of replaced and removed tracks are gone with them
    tiles = tile_scores(featurestore.open(store_copy), MODEL)
    assert set(tiles["track_id"]) == set(after["track_id"])
    assert len(tiles) == featurestore.open(store_copy).tracks(status="ok")["n_tiles"].sum()


def test_failed_and_other_feature_set_tracks_are_skipped_and_reported(store_copy, tmp_path,
                                                                      dask_client):
    lib = tmp_path / "extra"
    (lib / "audio").mkdir(parents=True)
    write_audio(lib / "audio" / "fine.wav", seconds=12.0, seed=1)
    (lib / "audio" / "broken.wav").write_bytes(b"RIFF\x00\x00not really audio")
    cat = write_catalog(lib / "extra.csv", [
        {"track_id": "fine", "path": "audio/fine.wav", "genres": "Drama"},
        {"track_id": "broken", "path": "audio/broken.wav", "genres": "Drama"},
        {"track_id": "gone", "path": "audio/gone.wav", "genres": "Drama"}])
    featurestore.build(cat, store_copy, client=dask_client, progress=False)
    other = write_catalog(lib / "other.csv", [
        {"track_id": "elsewhere", "path": "audio/fine.wav", "genres": "Comedy"}])
    featurestore.build(other, store_copy, client=dask_client, progress=False,
                       spec=featurestore.FeatureSpec(tile_frames=50))

    report = score(store_copy, MODEL, client=dask_client, progress=False)
    reasons = {track: reason for _, track, reason in report.skipped}
    assert set(reasons) == {"broken", "gone", "elsewhere"}
    assert "build failed (not_audio)" in reasons["broken"]
    assert "build failed (missing)" in reasons["gone"]
    assert "in feature set" in reasons["elsewhere"] and "not the model's" in reasons["elsewhere"]
    assert report.scored == 49  # the demo's 48 and "fine"
    assert "SKIPPED extra/broken" in report.summary()
    scored = set(scores(featurestore.open(store_copy), MODEL)["track_id"])
    assert "fine" in scored and not scored & {"broken", "gone", "elsewhere"}
    # asked for by id, each says why it has no score
    with pytest.raises(ValueError, match=r"broken \(build status not_audio: not scored\), "
                                         r"elsewhere \(build status pending: not scored\)"):
        track_rankings(featurestore.open(store_copy), MODEL, ["broken", "elsewhere", "fine"])


def _add_second_catalog(url: str, trained: dict, client) -> None:
    """The demo's 48 files again, as catalog ``more``: 48 new tracks to score."""
    featurestore.build(trained["catalog"], url, name="more", client=client, progress=False)


@pytest.fixture(scope="module")
def two_catalogs(trained, tmp_path_factory, dask_client):
    """The trained store scored once, then given a second catalog (48 tracks not scored yet):
    ``store``, with ``first`` the report of that scoring run; and ``reference``, a copy of it
    scored undisturbed. Tests work on copies of ``store``."""
    root = tmp_path_factory.mktemp("two-catalogs")
    url = _copy_store(trained["store"], root)
    first = score(url, MODEL, client=dask_client, progress=False)
    _add_second_catalog(url, trained, dask_client)
    reference = str(root / "reference")
    shutil.copytree(url, reference)
    score(reference, MODEL, client=dask_client, progress=False)
    return {"store": url, "first": first, "reference": reference}


@pytest.fixture
def two_catalogs_copy(two_catalogs, tmp_path):
    return _copy_store(two_catalogs["store"], tmp_path)


def test_copies_of_learned_audio_do_not_measure_the_rankings(two_catalogs):
    """Catalog ``more`` holds the same recordings again: a copy of one the model learned is
    scored by the model that learned it, so what a ranking is worth is measured on the copies
    of the tracks it did not learn only, in both catalogs."""
    store = featurestore.open(two_catalogs["reference"])
    sides = ModelFiles(store, MODEL).read_frame("split.parquet")
    learned = set(sides.loc[sides["side"] != "test", "track_id"])
    first = store.tracks(status="ok", columns=["genres"])
    first = first[(first["catalog"] != "more") & (first["genres"].map(len) > 0)]
    unseen = set(first["track_id"]) - learned
    assert 0 < len(unseen) < len(first)
    assert ranking_quality(store, MODEL, "Drama").tracks == 2 * len(unseen)
    assert ranking_quality(store, MODEL, "Drama", catalog="more").tracks == len(unseen)


def test_copies_of_fitted_audio_rank_by_the_cross_fitted_scores(trained, tmp_path, dask_client):
    """A statistics model ranks the tracks it was fitted on by cross-fitted scores; a copy of
    one of them added later, in another catalog, is audio it learned too: the same scores,
    not the model's own (which would lift copies of its training cues in every answer)."""
    url = _copy_store(trained["store"], tmp_path)
    train(url, "lin", TrainConfig(arch="linear", min_tracks=6, test_size=0.25), progress=False)
    sides = ModelFiles(featurestore.open(url), "lin").read_frame("split.parquet")
    chosen = pd.concat([sides[sides["side"] == "train"].head(3),
                        sides[sides["side"] == "test"].head(2)])
    catalog = pd.read_csv(trained["catalog"])
    catalog = catalog[catalog["track_id"].isin(chosen["track_id"])].assign(
        path=lambda f: [os.path.join(os.path.dirname(trained["catalog"]), p) for p in f["path"]])
    catalog.to_csv(tmp_path / "copies.csv", index=False)
    featurestore.build(str(tmp_path / "copies.csv"), url, name="more", client=dask_client,
                       progress=False)
    report = score(url, "lin", client=dask_client, progress=False)
    ranked = scores(featurestore.open(url), "lin")
    wide = ranked.pivot_table(index=KEY, columns="label", values="score")
    flags = ranked.drop_duplicates(KEY).set_index(KEY)["cross_fitted"]
    (first,) = set(sides["catalog"])
    for track_id, side in zip(chosen["track_id"], chosen["side"]):
        # the same numbers (a test track's own scores, from another batch: to float error)
        np.testing.assert_allclose(wide.loc[("more", track_id)], wide.loc[(first, track_id)],
                                   rtol=1e-5, atol=1e-7)
        assert flags[("more", track_id)] == flags[(first, track_id)] == (side == "train")
    assert report.cross_fitted == (sides["side"] != "test").sum() + 3


@pytest.mark.parametrize("point", ["lock", "staged"])
def test_killed_run_keeps_old_results_and_rerun_completes_it(two_catalogs, two_catalogs_copy,
                                                            dask_client, capsys, point):
    """SIGKILL the scoring driver and its cluster as soon as it holds the model's lock, or once
    three batches are staged: the previous rankings stay as they were, and a rerun scores the
    rest (adopting what was staged) to the undisturbed result."""
    store_copy, reference = two_catalogs_copy, two_catalogs["reference"]
    old, old_embedded = _rankings(store_copy), _embeddings(store_copy)

    table = score_table(featurestore.open(store_copy), MODEL)
    proc = subprocess.Popen(cli("score", "--store", store_copy, "--model", MODEL, "--workers",
                                "1", "--batch-tiles", "1", "--no-progress"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    lock = os.path.join(store_copy, "locks", f"score-{MODEL}.json")
    try:
        if point == "lock":
            wait_for(lambda: os.path.exists(lock), 120, "the scoring lock")
        else:
            wait_for(lambda: len(table.staged_files()) >= 3, 120, "staged batches")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert table.seq() == 1, "the kill landed after the commit"
    pd.testing.assert_frame_equal(_rankings(store_copy), old)  # old results intact
    _assert_same_embeddings(_embeddings(store_copy), old_embedded)
    staged = len(table.staged_files())

    # the rerun in this process, on the session's cluster (the console script is killed above)
    res = run_cli(capsys, "score", "--store", store_copy, "--model", MODEL, "--scheduler",
                  dask_client.scheduler.address, "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    if point == "staged":
        assert "adopted from an interrupted run" in res.stdout
        adopted = int(res.stdout.split(" adopted")[0].rsplit(", ", 1)[1])
        assert adopted >= staged - 1 >= 2  # finished batches are not scored again
    got, expected = _rankings(store_copy), _rankings(reference)
    _assert_same_embeddings(_embeddings(store_copy), _embeddings(reference))
    pd.testing.assert_frame_equal(got.drop(columns="score"), expected.drop(columns="score"))
    np.testing.assert_allclose(got["score"], expected["score"], atol=1e-6)
    assert len(got) == 96 * 10 and not got.duplicated([*KEY, "label"]).any()
    assert table.staged_files() == []


def test_concurrent_reader_sees_only_whole_runs(two_catalogs, two_catalogs_copy, dask_client):
    store_copy, first = two_catalogs_copy, two_catalogs["first"]
    store = featurestore.open(store_copy)
    seen, errors, stop = [], [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                frame = scores(store, MODEL, columns=[*KEY, "label", "rank", "run_id"])
                counts = frame.groupby(KEY)["rank"].agg(["count", "max"])
                if not ((counts["count"] == 10) & (counts["max"] == 10)).all():
                    errors.append("a track without all its labels")
                seen.append((len(counts), frozenset(frame["run_id"])))
            except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
                errors.append(repr(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        second = score(store_copy, MODEL, client=dask_client, progress=False, batch_tiles=4)
        rescored = score(store_copy, MODEL, client=dask_client, progress=False, rescore=True,
                         batch_tiles=4)
    finally:
        stop.set()
        reader.join()
    assert not errors, errors[:3]
    states = set(seen)
    allowed = {(48, frozenset({first.run_id})),
               (96, frozenset({first.run_id, second.run_id})),
               (96, frozenset({rescored.run_id}))}
    assert states <= allowed and len(seen) > 3
    assert (96, frozenset({rescored.run_id})) in states  # the reader saw the end


def test_versions_aggregation_and_refusals(store_copy, dask_client):
    score(store_copy, MODEL, client=dask_client, progress=False)
    store = featurestore.open(store_copy)
    first_version = score_table(store, MODEL).version
    with pytest.raises(ValueError, match="--rescore"):
        score(store_copy, MODEL, client=dask_client, progress=False, aggregate="max")
    score(store_copy, MODEL, client=dask_client, progress=False, aggregate="max", rescore=True)
    top = scores(store, MODEL)
    tiles = tile_scores(store, MODEL)
    classes = list(score_table(store, MODEL).info().classes)
    by_max = tiles.groupby(KEY)[classes].max().stack()
    by_max.index.names = [*KEY, "label"]
    got = top.set_index([*KEY, "label"])["score"]
    np.testing.assert_allclose(got.loc[by_max.index].to_numpy(), by_max.to_numpy(), atol=1e-7)
    assert set(top["aggregate"]) == {"max"}

    # Trained again under the same name: a new version, scored in full, the old one kept.
    train(store_copy, MODEL, TrainConfig(arch="ensemble", epochs=1, optimizer="adam",
                                         learning_rate=1e-3, min_tracks=6, test_size=0.25,
                                         seed=1), progress=False, overwrite=True)
    report = score(store_copy, MODEL, client=dask_client, progress=False)
    assert report.version != first_version and report.scored == 48
    assert set(scores(store, MODEL, version=first_version)["aggregate"]) == {"max"}
    assert set(scores(store, MODEL)["version"]) == {report.version}
    lazy = scores(store, MODEL, lazy=True)
    assert len(lazy.compute()) == 480
    # the old version's split is gone: it is neither evaluated nor measured on the new one's
    with pytest.raises(ValueError, match=f"version {first_version} .* is not its current"):
        evaluate(store, MODEL, version=first_version, similarity=False)
    with pytest.raises(ValueError, match="measured for the current version only"):
        ranking_quality(store, MODEL, "Drama", version=first_version)
    assert len(best_tracks(store, MODEL, "Drama", version=first_version)) == 20
    old_best, unmeasured = label_answer(store, MODEL, "Drama", version=first_version)
    assert unmeasured is None and old_best.equals(best_tracks(store, MODEL, "Drama",
                                                              version=first_version))
    with pytest.raises(featurestore.StoreError, match=r"version 0123456789abcdef \(scored "
                                                      r"versions: [0-9a-f, ]+\)$"):
        score_table(store, MODEL, "0123456789abcdef")  # no "run score": it cannot make that

    with pytest.raises(TrainingError, match="no model 'nope'"):
        score(store_copy, "nope", progress=False)
    with pytest.raises(ValueError, match="batch_tiles 0: must be at least 1"):
        score(store_copy, MODEL, batch_tiles=0, progress=False)
    with pytest.raises(ValueError, match="device 'gpu': use auto"):
        score(store_copy, MODEL, device="gpu", rescore=True, progress=False)
    if not torch.cuda.is_available():  # said by the worker that has none
        with pytest.raises(ValueError, match="device 'cuda': no CUDA device on"):
            score(store_copy, MODEL, client=dask_client, device="cuda", rescore=True,
                  aggregate="median", progress=False)
        # nothing changed: not the scores, nor the aggregate the version says they are
        assert set(scores(store, MODEL)["aggregate"]) == {"mean"}
        assert score_table(store, MODEL).info().aggregate == "mean"
    with pytest.raises(featurestore.StoreError, match="no scores of model 'unscored'"):
        score_table(store, "unscored")


def test_rankings_queries_and_cli(store_copy, dask_client, tmp_path, capsys):
    res = run_cli(capsys, "score", "--store", store_copy, "--model", MODEL, "--scheduler",
                  dask_client.scheduler.address, "--no-progress")
    assert res.returncode == 0 and "48 tracks scored" in res.stdout, res.stdout + res.stderr
    store = featurestore.open(store_copy)

    one = track_rankings(store, MODEL, "t00003")
    assert one["rank"].tolist() == list(range(1, 11))
    assert one["film"].nunique() == 1 and (np.diff(one["score"]) <= 0).all()

    best = best_tracks(store, MODEL, ["Thriller", "Sci-Fi"], top=5)
    assert best.equals(best_tracks(store, MODEL, ["thriller", "science fiction"], top=5))
    assert best["rank"].tolist() == [1, 2, 3, 4, 5] and (np.diff(best["score"]) <= 0).all()
    # by default the geometric mean of the labels' scores, over every current track
    pair = best[["Thriller", "Sci-Fi"]].to_numpy(np.float64)
    np.testing.assert_allclose(best["score"], np.sqrt(pair[:, 0] * pair[:, 1]), rtol=1e-5)
    wide = scores(store, MODEL, labels=["Thriller", "Sci-Fi"]).pivot_table(
        index="track_id", columns="label", values="score")
    together = np.sqrt(wide["Thriller"] * wide["Sci-Fi"])
    assert best["track_id"].tolist() == together.sort_values(ascending=False).index[:5].tolist()
    mean = best_tracks(store, MODEL, ["Thriller", "Sci-Fi"], combine="mean", top=5)
    np.testing.assert_allclose(mean["score"], mean[["Thriller", "Sci-Fi"]].mean(axis=1),
                               rtol=1e-6)
    assert mean["track_id"].tolist() == wide.mean(axis=1).sort_values(
        ascending=False).index[:5].tolist()
    weakest = best_tracks(store, MODEL, ["Thriller", "Sci-Fi"], combine="min", top=3)
    np.testing.assert_allclose(weakest["score"], weakest[["Thriller", "Sci-Fi"]].min(axis=1))
    # one label given alone is that label, not its letters
    pd.testing.assert_frame_equal(best_tracks(store, MODEL, "Drama", top=3),
                                  best_tracks(store, MODEL, ["Drama"], top=3))
    assert set(scores(store, MODEL, labels="Drama")["label"]) == {"Drama"}
    for lazy in (False, True):
        with pytest.raises(ValueError, match="rankings have no column.*'nope'"):
            scores(store, MODEL, columns=["track_id", "nope"], lazy=lazy)
    in_70s = best_tracks(store, MODEL, ["Drama"], top=50, year="1970:1979")
    assert len(in_70s) and in_70s["year"].between(1970, 1979).all()
    with pytest.raises(ValueError, match="does not score Polka"):
        best_tracks(store, MODEL, ["Polka"])
    with pytest.raises(ValueError, match="top 0: must be at least 1"):
        best_tracks(store, MODEL, ["Drama"], top=0)
    with pytest.raises(TypeError, match="no status filter here"):
        best_tracks(store, MODEL, ["Drama"], status="failed")
    for bad in (2.5, True, "5"):
        with pytest.raises(ValueError, match=f"top {bad!r}: must be a whole number"):
            best_tracks(store, MODEL, ["Drama"], top=bad)
    # how far to trust that answer: the same ranking of the labelled tracks the model did not
    # learn from (here its test split: an ensemble has no cross-fitted scores)
    sides = ModelFiles(store, MODEL).read_frame("split.parquet")
    learned = set(sides.loc[sides["side"] != "test", "track_id"])
    genres = store.tracks(columns=["genres"]).set_index("track_id")["genres"].map(set)
    drama = scores(store, MODEL, labels="Drama").set_index("track_id")["score"]
    unseen = [t for t in drama.index if t not in learned and genres[t]]
    has_drama = [t for t in unseen if "Drama" in genres[t]]
    quality = ranking_quality(store, MODEL, "drama")
    assert quality.labels == ["Drama"] and quality.cross_fitted == 0
    assert (quality.tracks, quality.positives) == (len(unseen), len(has_drama))
    assert 0 < len(has_drama) < len(unseen)
    assert quality.average_precision == pytest.approx(average_precision_score(
        [t in has_drama for t in unseen], drama[unseen]), rel=1e-6)
    assert quality.chance == pytest.approx(len(has_drama) / len(unseen))
    assert f"average precision there is {quality.average_precision:.3f}" in quality.summary()
    assert ranking_quality(store, MODEL, "Drama", year="1970:1979").tracks < quality.tracks
    # both from one read: the same as each alone
    answer, same = label_answer(store, MODEL, ["drama"], top=7, year="1970:1979")
    assert answer.equals(best_tracks(store, MODEL, ["Drama"], top=7, year="1970:1979"))
    assert same == ranking_quality(store, MODEL, "Drama", year="1970:1979")
    # no held-out track has both: nothing to measure, and it says so
    pair = ranking_quality(store, MODEL, ["thriller", "science fiction"], combine="min")
    assert (pair.tracks, pair.positives, pair.average_precision) == (len(unseen), 0, None)
    assert "nothing to measure this ranking by" in pair.summary()

    # the console command, which needs neither torch nor scikit-learn (2 s of imports)
    res, modules = cli_modules("rankings", "--store", store_copy, "--model", MODEL, "--label",
                               "Thriller", "--label", "Sci-Fi", "--top", "5", "--format", "json")
    assert res.returncode == 0, res.stderr
    assert not {"torch", "sklearn", "scipy"} & modules
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["track_id"] for r in rows] == best["track_id"].tolist()
    assert [r["score"] for r in rows] == pytest.approx(best["score"].tolist(), rel=1e-6)
    assert {"film", "composer", "year", "Thriller", "Sci-Fi"} <= set(rows[0])
    # beside the answer, out of its data (the probe's module list follows it)
    assert res.stderr.splitlines()[0] == pair.summary()
    # a filter that leaves nothing: the same columns, and a misspelt genre warned of once
    res = run_cli(capsys, "rankings", "--store", store_copy, "--model", MODEL, "--label",
                  "Thriller", "--genre", "Thriler", "--format", "csv")
    assert res.returncode == 0, res.stderr
    empty = pd.read_csv(io.StringIO(res.stdout))
    assert len(empty) == 0 and set(best.columns) <= set(empty.columns) | {"Sci-Fi"}
    assert res.stderr.count("no track has the label 'Thriler'") == 1, res.stderr
    res = run_cli(capsys, "rankings", "--store", store_copy, "--model", MODEL, "--track",
                  "t00003")
    assert res.returncode == 0 and res.stdout.count("t00003") == 10, res.stderr
    # a table for people: every score with four decimals, never 1.2e-07
    header, *lines = res.stdout.splitlines()
    column = header.split().index("score")
    assert all(re.fullmatch(r"[01]\.\d{4}", line.split()[column]) for line in lines), lines
    # --top keeps a track's best labels; --combine, which only --label uses, is refused
    res = run_cli(capsys, "rankings", "--store", store_copy, "--model", MODEL, "--track",
                  "t00003", "--top", "3", "--format", "json")
    assert [json.loads(line)["label"] for line in res.stdout.splitlines()] == \
        one["label"].tolist()[:3]
    res = run_cli(capsys, "rankings", "--store", store_copy, "--model", MODEL, "--track",
                  "t00003", "--combine", "min")
    assert res.returncode == 2 and "--combine applies to --label" in res.stderr
    res = run_cli(capsys, "rankings", "--store", store_copy, "--model", MODEL, "--track", "zzz")
    assert res.returncode == 2 and "no current scores" in res.stderr
    assert "zzz (not in the store)" in res.stderr
    # a model the store lacks is a usage error naming the store's models, not a storage fault
    res = run_cli(capsys, "rankings", "--store", store_copy, "--model", "nope", "--label",
                  "Drama")
    assert res.returncode == 2, res.stderr
    assert f"no model 'nope' in {store_copy} (models: " in res.stderr and MODEL in res.stderr
    # --genre filters the catalog's genres; the labels to rank by are --label
    res = run_cli(capsys, "rankings", "--store", store_copy, "--model", MODEL, "--genre", "Drama")
    assert res.returncode == 2 and "--label LABEL" in res.stderr, res.stderr
    assert "not both" not in res.stderr
    # the filters narrow the tracks --label ranks: a track's own ranking takes --catalog only,
    # and build status is no filter of a model's rankings (they are its built tracks')
    res = run_cli(capsys, "rankings", "--store", store_copy, "--model", MODEL, "--track",
                  "t00003", "--year", "1970:1979")
    assert res.returncode == 2 and "--track takes no filter but --catalog" in res.stderr
    with pytest.raises(SystemExit) as refused:
        run_cli(capsys, "rankings", "--store", store_copy, "--model", MODEL, "--label",
                "Drama", "--status", "ok")
    assert refused.value.code == 2
    assert "unrecognized arguments: --status ok" in capsys.readouterr().err

    report_dir = str(tmp_path / "report")
    res = run_cli(capsys, "evaluate", "--store", store_copy, "--model", MODEL, "--json",
                  "--report", report_dir)
    assert res.returncode == 0, res.stderr
    # the baseline's track lengths come from Parquet, read-only: torch must not warn of them
    assert "not writable" not in res.stderr
    figures = json.loads(res.stdout)
    for level in ("track", "tile"):
        assert {"lrap", "coverage_error", "coverage_lower_bound", "label_ranking_loss",
                "per_class"} <= set(figures[level])
    assert figures["k"] == 5 and len(figures["track"]["per_class"]["classes"]) == 10
    ev = evaluate(store, MODEL, "test")
    assert figures == json.loads(ev.to_json())  # the model's own
    # each label's ranking of the tracks, as `rankings --label` ranks them
    ranked = figures["track"]["label_precision"]
    measured = [c for i, c in enumerate(ev.classes) if 0 < ev.truth[:, i].sum() < len(ev.truth)]
    assert measured and ranked["mean"] == pytest.approx(np.mean(
        [ranked["classes"][c]["average_precision"] for c in measured]))
    for i, c in enumerate(ev.classes):
        expected = (average_precision_score(ev.truth[:, i], ev.scores[:, i]) if c in measured
                    else None)
        assert ranked["classes"][c]["average_precision"] == pytest.approx(expected)
    assert "tracks ranked for each label: mean average precision" in ev.summary()
    assert sorted(os.listdir(report_dir)) == ["cooccurrence.png", "metrics.json",
                                              "per_class_f1.png", "report.md",
                                              "score_distributions.png"]
    with open(os.path.join(report_dir, "per_class_f1.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    near = figures["similarity"]["embedding"]
    with open(os.path.join(report_dir, "report.md")) as f:  # the neighbour figures too
        page = f.read()
    assert (f"| model embeddings | {near['same_film_precision']:.3f} | "
            f"{near['label_jaccard']:.3f} |") in page
    assert "A track's scores are the mean of its tiles' scores." in page  # the ensemble
    drama = ranked["classes"]["Drama"]  # the per-class table's last two columns
    assert f"mean average precision **{ranked['mean']:.3f}**, against" in page
    row = next(line for line in page.splitlines() if line.startswith("| Drama |"))
    assert row.endswith(f"| {format_figure(drama['average_precision'])} | "
                        f"{drama['chance']:.3f} |")
    # on one track no label is on some tracks and off others: said, not left out
    one = dataclasses.replace(ev, track={**ev.track, "label_precision": label_precision(
        ev.truth[:1], ev.scores[:1], ev.classes)})
    why = "label AP not measurable (no label is on some of the test tracks and off the others)"
    assert one.summary().splitlines()[3] == f"  labels   {why}"
    assert f"; {why}." in markdown(one)
    assert "some of the tracks and" in dataclasses.replace(one, split="all").summary()
    # by default the report goes into the store, beside the scores
    res = run_cli(capsys, "evaluate", "--store", store_copy, "--model", MODEL, "--split",
                  "val", "--top-k", "3")
    assert res.returncode == 0 and "val split" in res.stdout, res.stderr
    default = os.path.join(score_table(store, MODEL).url, "evaluation", "val")
    assert f"report: {os.path.join(default, 'report.md')}" in res.stderr
    with open(os.path.join(default, "metrics.json")) as f:
        assert json.load(f)["k"] == 3
