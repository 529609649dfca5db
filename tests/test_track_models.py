"""Track-level models: the linear and kernel models equal scikit-learn, the pooled CNN pools
every tile once, augmentations keep shapes and labels, ``auto`` picks the better candidate, and
they are scored, ranked and rescored nightly like every other model."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.fft
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import KFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import featurestore
from catalogs.labels import label_lists
from scoring import best_tracks, evaluate, ranking_quality, score, scores, track_rankings
from scoring.report import markdown
from scoring.score_tables import ScoreTable
from tests.helpers import copy_demo_library, small_library
from training import TrainConfig, TrainingError, train
from training.augment import crop_windows, mixup, spec_augment
from training.linear import (ESTIMATORS, choose_c, cross_fitted, fold_splits, kernel_svm,
                             one_blas_thread, to_module)
from training.model_files import ModelFiles
from training.selection import inner_split
from training.targets import multi_hot
from training.track_models import (QUANTILES, PooledCNN, StatisticsLayout, TrackKernel,
                                   TrackLinear, track_statistics)

QUICK = dict(min_tracks=6, test_size=0.25, device="cpu")


def _statistics_by_hand(tiles: np.ndarray, quantiles: tuple[float, ...] = (),
                        cepstra: int = 0) -> np.ndarray:
    """Mean, std and quantiles per coefficient over every frame of a track's tiles, in numpy;
    with ``cepstra``, the bands' mean and std, then those of scipy's DCT of every frame."""
    frames = tiles.transpose(1, 0, 2).reshape(tiles.shape[1], -1).astype(np.float64)
    if cepstra:
        ceps = scipy.fft.dct(frames, axis=0, type=2, norm="ortho")[1:cepstra + 1]
        return np.concatenate([frames.mean(1), frames.std(1),
                               _statistics_by_hand(ceps[None], quantiles)])
    return np.concatenate([frames.mean(1), frames.std(1),
                           *np.percentile(frames, np.multiply(quantiles, 100), axis=1)])


def _tracks_and_tiles(url: str, sides: pd.DataFrame, side: str):
    store = featurestore.open(url)
    tracks = sides[sides["side"] == side].merge(store.tracks(status="ok"),
                                                on=["catalog", "track_id"])
    tiles = store.tiles(tracks).compute()
    per_track = [tiles.values[(tiles["track_id"].values == t)] for t in tracks["track_id"]]
    return tracks, per_track


def test_track_statistics_equal_numpy():
    rng = np.random.default_rng(0)
    tracks = [rng.normal(size=(n, 5, 7)).astype(np.float32) for n in (1, 4, 2)]
    for quantiles in ((), QUANTILES):
        got = track_statistics(torch.from_numpy(np.concatenate(tracks)),
                               torch.tensor([1, 4, 2]), quantiles)
        np.testing.assert_allclose(got.numpy(),
                                   [_statistics_by_hand(t, quantiles) for t in tracks],
                                   atol=1e-6)


def test_cepstral_statistics_equal_scipys_dct_of_the_bands():
    """On log-mel tiles ``kernel`` adds the statistics of the frames' cepstra: scipy's DCT."""
    rng = np.random.default_rng(1)
    tracks = [rng.normal(size=(n, 12, 7)).astype(np.float32) for n in (1, 3, 2)]
    layout = StatisticsLayout.for_model("kernel", "logmel", 12)
    assert layout == StatisticsLayout(QUANTILES, 11)  # at most the bands less one
    assert StatisticsLayout.for_model("kernel", "logmel", 64).cepstra == 40
    assert StatisticsLayout.for_model("kernel", "mfcc", 40) == StatisticsLayout(QUANTILES)
    assert StatisticsLayout.for_model("linear", "logmel", 64) == StatisticsLayout()
    got = layout.of(torch.from_numpy(np.concatenate(tracks)), torch.tensor([1, 3, 2]))
    assert got.shape == (3, layout.size(12)) == (3, 2 * 12 + 5 * 11)
    np.testing.assert_allclose(got.numpy(), [_statistics_by_hand(t, QUANTILES, 11)
                                             for t in tracks], atol=1e-6)


def test_linear_model_equals_scikit_learn_fitted_by_hand(demo_store):
    report = train(demo_store, "lin", TrainConfig(arch="linear", **QUICK), progress=False)
    files = ModelFiles(featurestore.open(demo_store), "lin")
    config = files.read_config()
    assert report.arch == "linear" and config["complete"]
    sides = files.read_frame("split.parquet")
    c = report.history["C"].iloc[0]
    fitted, x = {}, {}
    for side in ("train", "val", "test"):
        tracks, tiles = _tracks_and_tiles(demo_store, sides, side)
        x[side] = np.stack([_statistics_by_hand(t) for t in tiles])
        fitted[side] = (tracks, tiles)
    y = {s: multi_hot(fitted[s][0], config["classes"]) for s in fitted}
    by_hand = make_pipeline(StandardScaler(), OneVsRestClassifier(
        LogisticRegression(C=c, max_iter=5000)))
    with one_blas_thread():  # as training fits it: the same floating-point sums
        by_hand.fit(np.concatenate([x["train"], x["val"]]),
                    np.concatenate([y["train"], y["val"]]))
    expected = by_hand.predict_proba(x["test"])
    model = files.load_model()
    tracks, tiles = fitted["test"]
    counts = torch.tensor([len(t) for t in tiles])
    got = model.forward_tracks(torch.from_numpy(np.concatenate(tiles))[:, None], counts)
    np.testing.assert_allclose(torch.sigmoid(got).numpy(), expected, atol=1e-5)
    assert config["metrics"]["track_lrap"] > 0.5


@pytest.mark.filterwarnings("ignore:Label .* is present in all training examples")
def test_kernel_model_equals_the_svms_decision_function():
    rng = np.random.default_rng(0)
    tiles = rng.normal(size=(60, 5, 7)).astype(np.float32)
    tiles[:30] += np.linspace(0, 2, 7)  # half the tracks rise over time: a learnable class
    counts = np.full(30, 2)
    y = np.stack([np.arange(30) < 15, rng.random(30) < 0.5], axis=1).astype(int)
    # with quantiles (as trained on MFCC tiles), with cepstra (on log-mel tiles) and without
    # either (as models fitted before them were saved)
    for layout in (StatisticsLayout(QUANTILES), StatisticsLayout(QUANTILES, 3),
                   StatisticsLayout()):
        x = np.stack([_statistics_by_hand(t, layout.quantiles, layout.cepstra)
                      for t in np.split(tiles, 30)])
        pipeline = kernel_svm(3.0).fit(x, y)
        module = to_module(pipeline, (5, 7), layout)
        assert isinstance(module, TrackKernel) and module.layout == layout
        got = module.forward_tracks(torch.from_numpy(tiles)[:, None], torch.from_numpy(counts))
        np.testing.assert_allclose(got.numpy(), pipeline.decision_function(x), atol=1e-5)
        # saved and loaded as every model is: support vectors and statistics from the file
        saved = module.state_dict()
        if not layout.cepstra:  # files written before cepstra existed have no such entry
            del saved["cepstra"]
        loaded = TrackKernel((5, 7), 2)
        loaded.load_state_dict(saved)
        assert loaded.layout == layout
        torch.testing.assert_close(loaded.forward_tracks(torch.from_numpy(tiles)[:, None],
                                                         torch.from_numpy(counts)), got)
    # A class on every training track (a fold of a few films can have one) or on none:
    # scikit-learn predicts it as a constant, and the module scores it nearly certain, with
    # the other classes' machines unchanged.
    for constant in (1, 0):
        labels = np.column_stack([y[:, 0], np.full(30, constant)])
        pipeline = kernel_svm(3.0).fit(x, labels)
        module = to_module(pipeline, (5, 7), layout)
        got = module.forward_tracks(torch.from_numpy(tiles)[:, None], torch.from_numpy(counts))
        np.testing.assert_allclose(got[:, 0].numpy(), pipeline.decision_function(x)[:, 0],
                                   atol=1e-5)
        assert ((torch.sigmoid(got[:, 1]) > 0.99) == bool(constant)).all()
    pipeline = kernel_svm(3.0).fit(x, np.ones((30, 2), dtype=int))  # no machine at all
    got = to_module(pipeline, (5, 7), layout).forward_tracks(
        torch.from_numpy(tiles)[:, None], torch.from_numpy(counts))
    assert (torch.sigmoid(got) > 0.99).all()


def test_pooled_cnn_pools_every_tile_of_a_track_once():
    torch.manual_seed(0)
    model = PooledCNN((40, 100), 3, width=8).eval()
    tiles = torch.randn(6, 1, 40, 100)
    counts = torch.tensor([1, 3, 2])
    with torch.no_grad():
        got = model.forward_tracks(tiles, counts)
        embedded = model.embed(tiles)
        expected = []
        for part in embedded.split(counts.tolist()):
            expected.append(model.head(torch.cat([part.mean(0), part.amax(0)])))
        torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=1e-5)
        # The order of a track's tiles does not matter; each tile counts once.
        shuffled = tiles[[0, 3, 1, 2, 5, 4]]
        torch.testing.assert_close(model.forward_tracks(shuffled, counts), got, atol=1e-5,
                                   rtol=1e-5)
        doubled = torch.cat([tiles[:1], tiles[1:4], tiles[1:2], tiles[4:]])
        assert not torch.allclose(model.forward_tracks(doubled, torch.tensor([1, 4, 2])), got)
        # Long tracks are embedded in chunks with the same result.
        model.embed_chunk = 2
        torch.testing.assert_close(model.forward_tracks(tiles, counts), got, atol=1e-5,
                                   rtol=1e-5)
        # One tile scored alone is a one-tile track.
        torch.testing.assert_close(model(tiles[:1]), got[:1], atol=1e-5, rtol=1e-5)


def test_augmentations_keep_shapes_and_labels_and_change_values():
    tiles = torch.randn(10, 4, 6)  # two tracks: 4 tiles, 6 tiles; 6 frames a tile
    starts, counts = torch.tensor([0, 4]), torch.tensor([4, 6])
    windows, taken = crop_windows(tiles, starts, counts, 3, torch.Generator().manual_seed(1))
    assert windows.shape == (6, 4, 6) and taken.tolist() == [3, 3]
    for track, (s, n) in enumerate(((0, 4), (4, 6))):
        frames = tiles[s:s + n].permute(1, 0, 2).reshape(4, -1)
        crop = windows[3 * track:3 * track + 3].permute(1, 0, 2).reshape(4, -1)
        found = [o for o in range(frames.shape[1] - crop.shape[1] + 1)
                 if torch.equal(frames[:, o:o + crop.shape[1]], crop)]
        assert found, "a crop is consecutive frames of its own track"
    offsets = {crop_windows(tiles, starts, counts, 3, torch.Generator().manual_seed(k))[0][0, 0, 0]
               .item() for k in range(20)}
    assert len(offsets) > 1  # crops move between draws
    short, taken = crop_windows(tiles[:2], torch.tensor([0]), torch.tensor([2]), 5)
    assert taken.tolist() == [2] and torch.equal(short, tiles[:2])

    fill = torch.full((4, 6), 7.0)
    masked = spec_augment(tiles, fill, max_rows=0.5, max_frames=0.5,
                          generator=torch.Generator().manual_seed(0))
    assert masked.shape == tiles.shape
    changed = masked != tiles
    assert changed.any() and (masked[changed] == 7.0).all()

    # one-hot rows as features and targets: each mixed row shows its weights, which the targets
    # share, its own row weighing at least half
    features = targets = torch.eye(8)
    mixed, mixed_targets = mixup(features, targets, 0.4, torch.Generator().manual_seed(0))
    assert not torch.allclose(mixed, features)
    torch.testing.assert_close(mixed_targets, mixed)
    torch.testing.assert_close(mixed.sum(1), torch.ones(8))
    assert (mixed.diagonal() >= 0.5).all()
    again = mixup(features, targets, 0.4, torch.Generator().manual_seed(0))[0]
    torch.testing.assert_close(again, mixed)  # a seeded generator decides every draw
    assert mixup(features, targets, 0.0)[0] is features


def test_pooled_model_trains_and_resumes(demo_store):
    config = TrainConfig(arch="pooled", epochs=4, patience=4, checkpoint_seconds=0, **QUICK)
    whole = train(demo_store, "pool-whole", config, progress=False)
    assert len(whole.history) == 4 and whole.history["val_lrap"].notna().all()

    class Stop(Exception):
        pass

    def stop(row):
        if row["epoch"] == 1:
            raise Stop()

    with pytest.raises(Stop):
        train(demo_store, "pool-cut", config, progress=False, on_epoch=stop)
    ran = []  # the epochs the second call trains: those after its checkpoint only
    resumed = train(demo_store, "pool-cut", config, progress=False, on_epoch=ran.append)
    assert [row["epoch"] for row in ran] == [2, 3]
    assert resumed.resumed and list(resumed.history["epoch"]) == [0, 1, 2, 3]
    np.testing.assert_allclose(resumed.history["val_loss"], whole.history["val_loss"],
                               rtol=1e-4)
    model = ModelFiles(featurestore.open(demo_store), "pool-whole").load_model()
    assert isinstance(model, PooledCNN)


def test_auto_picks_the_candidate_with_the_best_validation_score(demo_store):
    # The demo's genres are separable from MFCC statistics, and one epoch leaves the CNN
    # near chance: auto must pick linear, and say why.
    report = train(demo_store, "auto", TrainConfig(epochs=1, folds=3, **QUICK), progress=False)
    config = ModelFiles(featurestore.open(demo_store), "auto").read_config()
    selection = config["selection"]
    assert report.arch == config["arch"] == selection["best"] == "linear"
    scores = selection["candidates"]
    assert set(scores) == {"linear", "kernel", "pooled"}
    assert all(len(s["lrap"]) == 3 for s in scores.values())
    assert scores["linear"]["mean"] == max(s["mean"] for s in scores.values())
    assert scores["linear"]["mean"] > scores["pooled"]["mean"]
    assert "linear has the best mean validation LRAP" in report.summary()
    assert "epochs" not in report.summary()  # scikit-learn fits it at once
    # the epochs were the network candidate's: the fitted model's settings do not claim them
    assert config["train_config"]["epochs"] is None
    assert config["requested_config"]["epochs"] == 1
    with pytest.raises(TrainingError, match="track-level"):
        train(demo_store, "auto-cnn", TrainConfig(candidates=("linear", "cnn"), **QUICK),
              progress=False)
    assert TrackLinear((40, 100), 2).track_level
    # Without test tracks a statistics model would be measured on tracks it was fitted on:
    # refused before anything is written (auto too, which may pick one).
    for arch in ("kernel", "auto"):
        with pytest.raises(TrainingError, match="no test tracks .* of tracks it learned"):
            train(demo_store, "no-test", TrainConfig(arch=arch, **{**QUICK, "test_size": 0}),
                  progress=False)
    assert not ModelFiles(featurestore.open(demo_store), "no-test").exists()


def test_cross_fitted_scores_come_from_models_that_did_not_see_the_track():
    """Changing one track's labels changes the model's own score of it, and not its
    cross-fitted one, which comes from a model fitted without it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6))
    y = (x[:, :3] + rng.normal(scale=0.8, size=(80, 3)) > 0).astype(int)
    flipped = y.copy()
    flipped[7] = 1 - flipped[7]
    for arch in ("linear", "kernel"):
        before, after = (cross_fitted(arch, x, labels, 1.0) for labels in (y, flipped))
        np.testing.assert_allclose(after[7], before[7])
        assert not np.allclose(after, before)  # the other folds' models saw track 7
        own = [ESTIMATORS[arch](1.0).fit(x, labels).decision_function(x)[7]
               for labels in (y, flipped)]
        assert not np.allclose(*own)
    # By group (a film per 10 tracks), a whole film is held out together: relabelling all
    # of film 3 leaves its tracks' scores as they were.
    films = np.repeat(np.arange(8), 10)
    film3 = films == 3
    relabelled = y.copy()
    relabelled[film3] = 1 - relabelled[film3]
    before, after = (cross_fitted("linear", x, labels, 1.0, groups=films)
                     for labels in (y, relabelled))
    np.testing.assert_allclose(after[film3], before[film3])
    # A class on every track but one: the fold holding that one out leaves nothing to learn
    # of it (scikit-learn would score every track of the fold 1, the negative included), so
    # that fold's tracks get the model fitted on every track.
    almost = y.copy()
    almost[:, 0], almost[5, 0] = 1, 0
    held = cross_fitted("linear", x, almost, 1.0)
    everything = ESTIMATORS["linear"](1.0).fit(x, almost).decision_function(x)
    fold = next(h for _, h in KFold(5, shuffle=True, random_state=0).split(x) if 5 in h)
    np.testing.assert_allclose(held[fold, 0], everything[fold, 0])


def test_copies_of_a_recording_do_not_flatter_the_inner_validation():
    """Every track twice (a recording in two catalogs) with labels that nothing predicts: split
    by row, a weakly regularized model meets each held-out track's twin in its fit and looks
    nearly perfect; held out by recording, it scores what noise scores. The pooled CNN's
    early-stopping split keeps copies on one side too."""
    rng = np.random.default_rng(1)
    x = np.repeat(rng.normal(size=(40, 12)), 2, axis=0)
    y = np.repeat((rng.random((40, 3)) < 0.4).astype(int), 2, axis=0)
    y[y.sum(1) == 0, 0] = 1
    recording = np.repeat(np.arange(40), 2).astype(str)
    by_row = choose_c("kernel", x, y)[1]
    by_recording = choose_c("kernel", x, y, groups=recording)[1]
    # random scores give about 0.7 on these labels
    assert max(by_row.values()) > 0.85 and max(by_recording.values()) < 0.75
    for fit, held in fold_splits(len(x), 3, 0, recording):
        assert not set(recording[fit]) & set(recording[held])

    rows = np.arange(100, 180)
    train_rows, val_rows = inner_split(rows, 0.2, 5, recording)
    assert sorted([*train_rows, *val_rows]) == rows.tolist()
    assert not set(recording[train_rows - 100]) & set(recording[val_rows - 100])
    assert len(val_rows) == 16
    # one recording only: there is nothing to hold out by, so rows are split as without groups
    alone = np.zeros(80, dtype=int)
    np.testing.assert_array_equal(inner_split(rows, 0.2, 5, alone)[1],
                                  inner_split(rows, 0.2, 5)[1])


def test_auto_killed_during_its_selection_goes_on_from_the_folds_it_measured(demo_store):
    """Each fold's result is kept as it comes: a run killed while cross-validating ``kernel``
    keeps ``linear``'s folds, and its rerun fits only what is left, to the same choice."""
    config = TrainConfig(candidates=("linear", "kernel"), folds=3, **QUICK)
    whole = train(demo_store, "auto-whole", config, progress=False, log=lambda m: None)

    class Killed(Exception):
        pass

    def kill_at_kernel(message):
        if message.startswith("auto: linear"):  # linear's three folds are measured
            raise Killed()

    with pytest.raises(Killed):
        train(demo_store, "auto-cut", config, progress=False, log=kill_at_kernel)
    files = ModelFiles(featurestore.open(demo_store), "auto-cut")
    assert not files.has("selection.json")
    kept = files.read_json("selection_folds.json")["candidates"]
    assert kept["linear"]["lrap"] == whole.selection["candidates"]["linear"]["lrap"]
    resumed = train(demo_store, "auto-cut", config, progress=False, log=lambda m: None)
    for arch in ("linear", "kernel"):
        assert (resumed.selection["candidates"][arch]["lrap"]
                == whole.selection["candidates"][arch]["lrap"])
    assert resumed.selection["best"] == whole.selection["best"]
    # linear was not fitted again: its line reports the kept folds' seconds
    assert resumed.selection["candidates"]["linear"]["seconds"] == pytest.approx(
        sum(kept["linear"]["seconds"]))


def test_kernel_on_log_mel_tiles_fits_their_cepstra_and_scores(demo_library, dask_client,
                                                                tmp_path):
    url = str(tmp_path / "store")
    spec = featurestore.FeatureSpec(kind="logmel", n_mels=32)
    featurestore.build(copy_demo_library(demo_library, tmp_path / "lib", 24), url, spec=spec,
                       client=dask_client, progress=False)
    # A kind names the store's feature set of that kind.
    train(url, "k", TrainConfig(arch="kernel", feature_set="logmel", **QUICK), progress=False)
    store = featurestore.open(url)
    assert ModelFiles(store, "k").read_config()["feature_set"] == spec.hash
    with pytest.raises(featurestore.StoreError, match="no mfcc feature set.*--kind mfcc"):
        store.feature_set("mfcc")
    model = ModelFiles(store, "k").load_model()
    assert model.layout == StatisticsLayout(QUANTILES, 31)
    assert model.center.shape == (2 * 32 + 5 * 31,)
    score(url, "k", client=dask_client, progress=False)
    # a test track (the model was not fitted on it) ranks by the model's own scores
    i = _tracks_by_side(store, "k")["test"][0]
    classes = ModelFiles(store, "k").read_config()["classes"]
    np.testing.assert_allclose(_ranked(store, "k", i, classes), _own(store, model, i),
                               atol=1e-5)


def _tracks_by_side(store, name: str) -> dict[str, list[int]]:
    """Positions in ``store.tracks(status="ok")`` of the model's train, val and test tracks."""
    tracks = store.tracks(status="ok").reset_index(drop=True)
    side = tracks.merge(ModelFiles(store, name).read_frame("split.parquet"), how="left")["side"]
    return {s: list(np.flatnonzero(side.to_numpy() == s)) for s in ("train", "val", "test")}


def _own(store, model, i: int) -> np.ndarray:
    """The model's own scores of the ``i``-th ok track, from all its tiles."""
    tiles = torch.from_numpy(store.tiles(store.tracks(status="ok").iloc[i:i + 1]).values)
    with torch.no_grad():
        out = model.forward_tracks(tiles[:, None], torch.tensor([len(tiles)]))
    return torch.sigmoid(out)[0].numpy()


def _ranked(store, name: str, i: int, classes: list[str]) -> np.ndarray:
    """The committed scores of the ``i``-th ok track, in ``classes`` order."""
    track = store.tracks(status="ok").iloc[i]
    ranking = track_rankings(store, name, [track["track_id"]], track["catalog"])
    return ranking.set_index("label").loc[classes, "score"].to_numpy()


def test_track_level_model_scores_ranks_and_rescores_nightly(demo_store, dask_client, tmp_path):
    url = str(tmp_path / "store")
    shutil.copytree(demo_store, url)
    train(url, "nightly", TrainConfig(arch="linear", **QUICK), progress=False)
    built = len(featurestore.open(url).tracks(status="ok"))
    first = score(url, "nightly", client=dask_client, progress=False)
    assert first.scored == built and first.commit == 1 and first.aggregate == "pooled"
    assert "(each track from all its tiles)" in first.summary()
    fitted = len(ModelFiles(featurestore.open(url), "nightly").cross_fitted_scores())
    assert 0 < fitted < built and first.cross_fitted == fitted
    assert f"{fitted} of them fitted by the model" in first.summary()
    # A track the model was not fitted on ranks by the model's own forward pass over all of
    # its tiles. A track it was fitted on ranks by its cross-fitted scores (from a model
    # fitted without it), not by the model's own scores of data it learned.
    store = featurestore.open(url)
    files = ModelFiles(store, "nightly")
    model, classes = files.load_model(), files.read_config()["classes"]
    sides = _tracks_by_side(store, "nightly")
    test = sides["test"][0]
    np.testing.assert_allclose(_ranked(store, "nightly", test, classes),
                               _own(store, model, test), atol=1e-5)
    cross = files.cross_fitted_scores()
    ok = store.tracks(status="ok").reset_index(drop=True)
    assert sorted(cross) == sorted(ok["content_hash"][sides["train"] + sides["val"]])
    for i in (sides["train"][0], sides["val"][0]):
        held = cross[ok.loc[i, "content_hash"]]
        np.testing.assert_allclose(_ranked(store, "nightly", i, classes), held, atol=1e-6)
        assert np.abs(held - _own(store, model, i)).max() > 1e-3
    # each row says which of the two its score is, and so does the answer to "which tracks
    # fit these labels?"
    for i, expected in ((test, False), (sides["train"][0], True), (sides["val"][0], True)):
        rows = track_rankings(store, "nightly", [ok.loc[i, "track_id"]], ok.loc[i, "catalog"])
        assert rows["cross_fitted"].tolist() == [expected] * len(classes)
    best = best_tracks(store, "nightly", classes[:2], top=len(ok)).merge(
        ok.reset_index()[["catalog", "track_id", "index"]])
    assert best["cross_fitted"].tolist() == [i not in sides["test"] for i in best["index"]]
    # so what that answer is worth is measured on the whole labelled library: the fitted
    # tracks by their cross-fitted scores, the test tracks by the model's own
    quality = ranking_quality(store, "nightly", classes[0])
    answer = best_tracks(store, "nightly", classes[0], top=len(ok))
    has = label_lists(answer, "genres").map(lambda names: classes[0] in names)
    assert (quality.tracks, quality.cross_fitted, quality.positives) == (
        len(answer), fitted, has.sum()) and 0 < has.sum() < len(answer)
    assert quality.average_precision == pytest.approx(
        average_precision_score(has, answer["score"]), rel=1e-6)
    # an evaluation of the fitted tracks says their track figures are cross-fitted
    on_train = evaluate(store, "nightly", "train", similarity=False)
    assert on_train.cross_fitted and "cross-fitted scores" in markdown(on_train)
    on_test = evaluate(store, "nightly", "test", similarity=False)
    assert not on_test.cross_fitted and "cross-fitted" not in markdown(on_test)

    # Night two: three new tracks arrive; only they are scored. Night three: nothing to do.
    # The committed rankings are put back as a file without a cross_fitted column: its rows
    # read as unknown, and stay so beside the new rows the commit adds.
    table = ScoreTable(store, "nightly", ModelFiles(store, "nightly").version())
    committed = pq.read_table(table.rankings_path)
    pq.write_table(committed.drop_columns(["cross_fitted"]), table.rankings_path)
    assert scores(store, "nightly")["cross_fitted"].isna().all()
    lazily = scores(store, "nightly", lazy=True, columns=["track_id", "cross_fitted"])
    assert str(lazily.dtypes["cross_fitted"]) == "boolean"
    assert lazily["cross_fitted"].compute().isna().all()
    featurestore.build(small_library(tmp_path / "more", n=3), url, name="more",
                       client=dask_client, progress=False)
    second = score(url, "nightly", client=dask_client, progress=False)
    assert (second.scored, second.up_to_date, second.commit) == (3, built, 2)
    flags = scores(store, "nightly").groupby("catalog")["cross_fitted"]
    assert flags.apply(lambda f: f.isna().all()).drop("more").all()
    assert not flags.get_group("more").isna().any() and not flags.get_group("more").any()
    third = score(url, "nightly", client=dask_client, progress=False)
    assert (third.scored, third.commit) == (0, 0)
    assert len(track_rankings(featurestore.open(url), "nightly", ["s000"], "more")) == len(
        classes)
    with pytest.raises(ValueError, match="scores each track from all of its tiles"):
        score(url, "nightly", aggregate="max", rescore=True, client=dask_client, progress=False)
    again = score(url, "nightly", rescore=True, client=dask_client, progress=False)
    assert again.scored == built + 3 and again.commit == 3
    # A model saved with settings a later version no longer has, offers or accepts (a
    # momentum of 1, a negative checkpoint interval, no buffered chunks) still scores.
    files = ModelFiles(featurestore.open(url), "nightly")
    config = files.read_config()
    config["train_config"].update(optimizer="lbfgs", balance="gone", retired_setting=1,
                                  lr_decay="none", min_tracks=-1, momentum=1.0,
                                  checkpoint_seconds=-1, buffer_chunks=0)
    files.write_config(config)
    old = score(url, "nightly", rescore=True, client=dask_client, progress=False)
    assert old.scored == built + 3
    assert len(track_rankings(featurestore.open(url), "nightly", ["s000"], "more")) == len(
        classes)
