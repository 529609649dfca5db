"""Training: splits, samplers, the lazy tile loader, the models, and runs on the demo library
(improving, resuming, refusing what it must)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections import Counter
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

import featurestore
from featurestore.tile_arrays import TileSource, tile_rows
from training import TrainConfig, TrainingError, train
from training.loader import BlockShuffleTiles, make_loader
from training.model_files import ModelFiles
from training.models import build_model
from training.samplers import MultiClassSampler, MultiLabelSampler, OneVsRestSampler, TileTable
from training.selection import TrackData, folds_of
from training.split import groups_among, holdout_groups, split_tracks
from training.train import TrainReport

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAST = dict(optimizer="adam", learning_rate=1e-3, min_tracks=6, test_size=0.2)


def _frame(n_films: int = 40, per_film: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_films):
        for k in range(per_film):
            rows.append({"catalog": "c", "track_id": f"f{f}-{k}", "film": f"Film {f}",
                         "n_tiles": int(rng.integers(1, 6))})
    return pd.DataFrame(rows)


def test_split_by_track_and_by_film():
    frame = _frame()
    side = split_tracks(frame, 0.1, 0.2, seed=3)
    assert set(side) == {"train", "val", "test"}
    assert side.index.equals(frame.index)  # one side per track, in the frame's order
    tiles = frame["n_tiles"].groupby(side).sum() / frame["n_tiles"].sum()
    assert 0.05 < tiles["test"] < 0.2 and 0.1 < tiles["val"] < 0.3
    by_film = split_tracks(frame, 0.1, 0.2, seed=3, group_by="film")
    assert by_film.groupby(frame["film"]).nunique().max() == 1  # no film on two sides
    assert split_tracks(frame, 0.1, 0.2, seed=3).equals(side)  # seeded
    assert not split_tracks(frame, 0.1, 0.2, seed=4).equals(side)
    # A rare class (3 films) reaches every side, whatever the seed: one film to test, one to
    # validation, and the last one to training, however far the sides are from their shares.
    targets = np.zeros((len(frame), 2), dtype=np.float32)
    targets[:, 0] = 1
    targets[frame["film"].isin(["Film 1", "Film 2", "Film 3"]).to_numpy(), 1] = 1
    for seed in range(20):
        side = split_tracks(frame, 0.1, 0.2, seed=seed, group_by="film", targets=targets)
        assert set(side[targets[:, 1] > 0]) == {"train", "val", "test"}, seed
    # One track carries both classes: taking it for class 0's validation must not take class
    # 1's last training track (seed 0 shuffles the tracks to 2, 4, 3, 0, 1).
    few = pd.DataFrame({"catalog": "c", "track_id": [f"t{i}" for i in range(5)],
                        "n_tiles": [1, 1, 1, 2, 3]})
    both = np.array([[1, 0], [1, 0], [1, 1], [1, 1], [0, 1]], dtype=np.float32)
    for seed in range(10):
        side = split_tracks(few, 0.1, 0.2, seed=seed, targets=both).to_numpy()
        assert both[side == "train"].sum(0).all(), seed  # every class has a training track
    # A film that test takes for one class must not take another class's second-to-last film:
    # War's films and Comedy's overlap in one (as in the game-score store), and each class
    # still gets a film on validation and one on training, whatever the seed.
    films = pd.DataFrame({"catalog": "c", "track_id": [f"t{i}" for i in range(5)],
                          "film": ["a", "b", "c", "d", "e"], "n_tiles": 2})
    genres = np.array([[1, 0], [1, 1], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    for seed in range(30):
        side = split_tracks(films, 0.1, 0.2, seed=seed, group_by="film",
                            targets=genres).to_numpy()
        for name in ("train", "val"):
            assert genres[side == name].sum(0).all(), (seed, name, side)
    with pytest.raises(TrainingError, match="no such column"):
        split_tracks(frame, group_by="studio")


def test_copies_of_a_recording_are_held_out_together():
    """The same audio in a second catalog is one recording: the split and cross-validation
    keep its copies on one side, or a model would be tested on audio it learned. Without
    copies, the split is the one by track (keys catalog/track_id)."""
    frame = _frame().assign(content_hash=lambda f: "h-" + f["track_id"])
    plain = split_tracks(frame, 0.1, 0.2, seed=3)
    assert split_tracks(frame.drop(columns="content_hash"), 0.1, 0.2, seed=3).equals(plain)
    assert holdout_groups(frame, None) is None  # every track stands alone: folds by track
    copies = frame.assign(catalog="more")
    both = pd.concat([frame, copies], ignore_index=True)
    for seed in range(10):
        side = split_tracks(both, 0.1, 0.2, seed=seed)
        assert (side[: len(frame)].to_numpy() == side[len(frame):].to_numpy()).all(), seed
        assert set(side) == {"train", "val", "test"}
    groups = holdout_groups(both, None)
    assert (groups[: len(frame)] == groups[len(frame):]).all()
    assert len(set(groups)) == len(frame)
    for fit, held in folds_of(np.arange(len(both)), groups, 5, seed=0):
        assert not set(groups[fit]) & set(groups[held])
    by_film = holdout_groups(both, "film")  # a group_by column decides alone
    assert list(by_film) == list(both["film"])
    # among some tracks: their groups where copies meet there, else each stands alone (the
    # copy of a test track leaves the training side's folds the ones by track)
    assert (groups_among(groups, np.arange(len(both))) == groups).all()
    assert groups_among(groups, np.arange(len(frame))) is None
    assert groups_among(None, np.arange(3)) is None
    data = TrackData(torch.zeros(len(both), 1, 1), np.arange(len(both)),
                     np.ones(len(both), int), np.zeros((len(both), 2)), groups=groups)
    assert list(data.groups_of(np.array([0, 1, len(frame)]))) == list(groups[[0, 1, 0]])
    assert data.groups_of(np.array([0, 1, 2])) is None


def test_settings_out_of_range_are_refused_naming_them():
    with pytest.raises(TrainingError, match=r"dropout \(--dropout\) rates must be in \[0, 1\): "
                                            "got 0.1, 1.0"):
        TrainConfig(dropout=(0.1, 1.0))
    with pytest.raises(TrainingError, match=r"dropout \(--dropout\) rates"):
        TrainConfig(dropout=(-0.1,))
    for seed in (-1, 2 ** 32):  # numpy's range, checked before a model is written
        with pytest.raises(TrainingError, match=r"seed \(--seed\) must be in \[0, 2\*\*32\)"):
            TrainConfig(seed=seed)
    with pytest.raises(TrainingError, match=r"folds \(--folds\) must be at least 2"):
        TrainConfig(folds=1)
    with pytest.raises(TrainingError, match=r"^min_tracks \(--min-tracks\) must not be negative; "
                                            r"learning_rate \(--learning-rate\) must be positive; "
                                            r"momentum \(--momentum\) must be in \[0, 1\); "
                                            r"checkpoint_seconds \(--checkpoint-seconds\) must "
                                            "not be negative$"):
        TrainConfig(min_tracks=-1, learning_rate=0.0, momentum=1.0, checkpoint_seconds=-1)
    with pytest.raises(TrainingError, match=r"lr_decay \(--lr-decay\) 'cosine': choose one "
                                            "of linear, constant"):
        TrainConfig(lr_decay="cosine")  # not silently constant
    assert TrainConfig(dropout=(0.0, 0.5)).dropout == (0.0, 0.5)
    # one name given alone is that name, not its letters
    assert TrainConfig(labels="Thriller", candidates="linear").labels == ("Thriller",)
    assert TrainConfig(candidates="linear").candidates == ("linear",)
    # a value of another kind is named, not compared (a string) or taken as true ("false")
    with pytest.raises(TrainingError, match=r"^batch_size \(--batch-size\) '64': must be a "
                                            r"whole number; spec_augment \(--spec-augment\) "
                                            "'false': must be True or False$"):
        TrainConfig(batch_size="64", spec_augment="false")
    with pytest.raises(TrainingError, match=r"^epochs \(--epochs\) 2.5: must be a whole "
                                            r"number; dropout \(--dropout\) \(0.1, '0.2'\): must "
                                            "be numbers$"):
        TrainConfig(epochs=2.5, dropout=(0.1, "0.2"))
    # numpy scalars (from a sweep's grid, say) are kept as the plain values a model saves
    numpy_given = TrainConfig(batch_size=np.int64(64), learning_rate=np.float32(0.5),
                              dropout=tuple(np.array([0.25, 0.5], dtype=np.float32)),
                              labels=["Drama", "War"])
    assert numpy_given == TrainConfig(batch_size=64, learning_rate=0.5, dropout=(0.25, 0.5),
                                      labels=("Drama", "War"))
    assert {type(v) for v in (numpy_given.batch_size, numpy_given.learning_rate,
                              *numpy_given.dropout)} == {int, float}
    json.dumps(numpy_given.to_dict())
    # a stored model's setting of another kind reads as unset, as one out of range does; a
    # number saved as text (numpy scalars were saved with str) reads as the number
    stored = {**TrainConfig(batch_size=64).to_dict(), "batch_size": "sixty-four", "width": 0}
    assert TrainConfig.from_dict(stored) == TrainConfig()
    assert TrainConfig.from_dict({**stored, "width": "64"}) == TrainConfig(width=64)


def test_summary_says_which_tracks_its_figures_are_of():
    metrics = {"track_lrap": 0.5, "track_coverage_error": 2.0, "mean_labels": 1.5,
               "tile_lrap": 0.4}
    history = pd.DataFrame({"epoch": [0, 1]})
    for side, words in (("test", "; test: track LRAP 0.500"),
                        ("val", "; validation (no test split): track LRAP 0.500")):
        report = TrainReport("m", "pooled", ["A", "B"], "cpu", history,
                             {**metrics, "evaluated_on": side})
        assert words in report.summary(), report.summary()
    # a label AP is measured where some test tracks have the label and some not
    measured = TrainReport("m", "pooled", ["A", "B"], "cpu", history,
                           {**metrics, "track_label_ap": 0.75, "track_label_ap_chance": 0.5})
    assert measured.summary().endswith(", label AP 0.750 (chance 0.500)")
    unmeasured = TrainReport("m", "pooled", ["A", "B"], "cpu", history,
                             {**metrics, "track_label_ap": None, "track_label_ap_chance": None})
    assert unmeasured.summary().endswith(", label AP not measurable (no label is on some of "
                                         "the test tracks and off the others)")


def test_settings_the_architecture_would_ignore_are_named():
    """A setting given for a model that does not use it would pass silently and the user would
    believe it was applied; `train` refuses it (see the refusals in the multilabel test)."""
    assert TrainConfig(arch="linear", mixup=0.5, epochs=3).unused_settings() == ["epochs",
                                                                                 "mixup"]
    assert TrainConfig(arch="dnn", width=64, compile=True).unused_settings() == ["width",
                                                                                 "compile"]
    assert TrainConfig(arch="pooled", folds=5).unused_settings() == ["folds"]
    # pooled's batches are tracks (tracks_per_batch); the statistics models weigh no classes
    assert TrainConfig(arch="pooled", batch_size=64).unused_settings() == ["batch_size"]
    assert TrainConfig(arch="kernel", balance="weights").unused_settings() == ["balance"]
    # values that change nothing for this request, though the setting has its uses elsewhere
    assert TrainConfig(arch="cnn", momentum=0.5).ignored_values() == []  # sgd, the study's
    for config, words in ((TrainConfig(arch="cnn", optimizer="adam", momentum=0.5),
                           "momentum (--momentum) is the sgd optimizer's, and adam"),
                          (TrainConfig(arch="pooled", momentum=0.5), "and adamw is used"),
                          (TrainConfig(arch="pooled", balance="oversample"),
                           "pooled's batches are tracks"),
                          (TrainConfig(labels=("A", "B"), min_tracks=50),
                           "picks the classes when --labels does not name them")):
        assert len(config.ignored_values()) == 1 and words in config.ignored_values()[0]
    assert TrainConfig(arch="ensemble", balance="oversample").ignored_values() == []
    # nor do they checkpoint: they are fitted at once
    assert TrainConfig(arch="linear", checkpoint_seconds=5).unused_settings() == [
        "checkpoint_seconds"]
    # auto takes what any of its candidates uses, and its own settings
    assert TrainConfig(mixup=0.5, epochs=3, folds=5).unused_settings() == []
    assert TrainConfig(dense_units=10).unused_settings() == ["dense_units"]
    assert TrainConfig(candidates=("linear", "kernel"), mixup=0.5).unused_settings() == ["mixup"]
    # a default given again, or a model's own settings, are not refused
    assert TrainConfig(arch="linear", mixup=0.2).unused_settings() == []
    assert TrainConfig(arch="ensemble", compile=True, dense_units=10, dropout=(0.1,),
                       epochs=3).unused_settings() == []
    # the model auto picks keeps only its own settings: the others' are back at their defaults
    picked = TrainConfig(epochs=3, mixup=0.5, folds=5).resolved("kernel")
    assert picked == TrainConfig(arch="kernel")
    assert TrainConfig(epochs=3, mixup=0.5, folds=5).resolved("pooled") == TrainConfig(
        arch="pooled", epochs=3, mixup=0.5).resolved()


def test_training_keeps_freed_buffers_for_reuse_and_then_gives_them_back(tmp_path):
    """Inside heap_reuse (around every train() run) a freed 48 MiB buffer is reused without
    faulting its pages in again, where glibc's defaults map it afresh each time; afterwards
    freed memory goes back to the system again."""
    script = tmp_path / "heap.py"
    script.write_text(
        "import os, resource, torch\n"
        "from training.heap import heap_reuse\n"
        "def faults():\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    for _ in range(5):\n"
        "        torch.empty(12 * 2**20).fill_(1.0)\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "def resident():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGESIZE')\n"
        "def held():  # three 60 MiB blocks freed: what the process keeps of them\n"
        "    base = resident()\n"
        "    blocks = [torch.empty(15 * 2**20).fill_(1.0) for _ in range(3)]\n"
        "    del blocks\n"
        "    torch.empty(2**18).fill_(1.0)  # a later free, where glibc trims\n"
        "    return resident() - base\n"
        "start = resident()\n"
        "outside = faults()\n"
        "with heap_reuse() as applied:\n"
        "    inside = min(faults() for _ in range(4))  # once small blocks settle around them\n"
        "    kept = held()\n"
        "held()\n"
        "print(applied, outside, inside, kept, resident() - start)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.split()
    if out[0] != "True":
        pytest.skip("not glibc: the heap settings do not apply")
    pages = 5 * 48 * 2**20 // resource.getpagesize()
    outside, inside, kept, after = map(int, out[1:])
    assert outside > pages // 2 and inside < pages // 50
    assert kept > 100 * 2**20 and after < 20 * 2**20, (kept, after)


def _table() -> TileTable:
    # 6 tracks, classes 0..2; class 2 is rare
    targets = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 1, 1], [1, 0, 0]],
                       dtype=np.float32)
    tracks = pd.DataFrame({"n_tiles": [10, 5, 8, 6, 3, 12],
                           "tile_start": [0, 10, 15, 23, 29, 32]})
    return TileTable.of(tracks, targets)


def test_samplers_balance_as_configured():
    table = _table()
    labels = table.labels
    counts = labels.sum(0).astype(int)  # [35, 14, 3]
    index, target = MultiClassSampler(table, "equal", seed=1).epoch(0)
    assert Counter(target.tolist()) == {0: 3, 1: 3, 2: 3}
    for c in range(3):  # every tile drawn under class c carries c
        rows = np.searchsorted(table.index, index[target == c])
        assert (labels[rows, c] == 1).all()
    _, target = MultiClassSampler(table, "oversample", seed=1).epoch(0)
    assert Counter(target.tolist()) == {0: 35, 1: 35, 2: 35}
    _, target = MultiClassSampler(table, "none").epoch(0)
    assert Counter(target.tolist()) == dict(enumerate(counts))
    weights = MultiClassSampler(table, "weights").loss_weights()
    assert torch.allclose(weights, torch.tensor(counts.sum() / (3 * counts), dtype=torch.float32))

    sampler = OneVsRestSampler(table, 1, "equal", seed=0)
    draws = []
    for epoch in range(2):
        index, target = sampler.epoch(epoch)
        positives = set(index[target[:, 0] == 1].tolist())
        assert positives == set(table.index[labels[:, 1] == 1].tolist())  # all of them
        assert (target == 0).sum() == (target == 1).sum() == 14
        draws.append(set(index[target[:, 0] == 0].tolist()))
    assert draws[0] != draws[1]  # a fresh sample of negatives each epoch
    index, target = MultiLabelSampler(table, "equal", seed=0).epoch(0)
    assert len(index) == 9 and target.shape == (9, 3)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_yields_every_planned_tile_once(demo_store, workers):
    store = featurestore.open(demo_store)
    fset = store.feature_set()
    stored = np.asarray(fset.arrays().mfcc[:])
    ok = store.tracks(status="ok")
    index, _ = tile_rows(ok["tile_start"], ok["n_tiles"])
    plan = np.concatenate([index, index[:5]])  # repeats are yielded as repeats
    data = BlockShuffleTiles(TileSource(fset.tiles_url), batch_size=16, buffer_chunks=2,
                             seed=0)
    data.set_plan(plan, np.arange(len(plan)), epoch=1)
    seen = []
    for x, pos in make_loader(data, workers):
        assert x.shape[1:] == (1, 40, 100) and len(x) <= 16
        np.testing.assert_array_equal(x[:, 0].numpy(), stored[plan[pos.numpy()]])
        seen.extend(pos.tolist())
    assert sorted(seen) == list(range(len(plan)))
    assert seen != sorted(seen)  # shuffled
    data.preload(index)  # the in-memory fast path gives the same tiles
    got = {p: x for xb, pb in make_loader(data, 0) for x, p in zip(xb[:, 0].numpy(),
                                                                      pb.tolist())}
    assert sorted(got) == list(range(len(plan)))
    np.testing.assert_array_equal(got[len(index)], stored[index[0]])


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_architectures_output_shapes_and_parameter_counts():
    x = torch.randn(4, 1, 40, 100)
    # by hand: weights + biases of each layer, from the study's table
    dnn = 4000 * 50 + 50 + 50 * 50 + 50 + 50 * 10 + 10
    convs6 = (1 * 32 * 25 + 32) + (32 * 64 * 9 + 64) + (64 * 128 * 4 + 128) + (
        128 * 256 * 4 + 256)
    cnn = convs6 + 256 * 2 * 6 * 50 + 50 + 50 * 50 + 50 + 50 * 10 + 10
    member = ((1 * 32 * 9 + 32) + (32 * 64 * 4 + 64) + (64 * 128 * 4 + 128)
              + 128 * 5 * 12 * 50 + 50 + 50 * 50 + 50 + 50 * 1 + 1)
    for arch, params in [("dnn", dnn), ("cnn", cnn), ("multilabel", cnn),
                         ("ensemble", 10 * member)]:
        model = build_model(arch, (40, 100), 10).eval()
        assert model(x).shape == (4, 10), arch
        assert _params(model) == params, arch
    assert build_model("ensemble", (40, 100), 4)(x).shape == (4, 4)
    assert build_model("cnn", (20, 50), 3)(torch.randn(2, 1, 20, 50)).shape == (2, 3)


def test_fast_layouts_compute_the_studys_layers():
    """Blocks pool before their ReLU, and run channels-last: the same numbers as the study's
    (Keras) order conv, ReLU, max-pool with "same" padding, in the default layout."""
    import torch.nn.functional as F

    from training.inference import place

    torch.manual_seed(0)
    model = build_model("cnn", (40, 100), 10).eval()
    x = torch.randn(8, 1, 40, 100)
    with torch.no_grad():
        h = model.standardize(x)
        for block in model.features:
            conv = block[1]
            k = conv.kernel_size[0]
            padded = F.pad(h, ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2))
            h = F.max_pool2d(F.relu(conv(padded)), 2)
        expected = model.head(h)
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
        fast = place(build_model("cnn", (40, 100), 10), torch.device("cpu")).eval()
        fast.load_state_dict(model.state_dict())
        got = fast(place(x, torch.device("cpu")))
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_short_training_improves_validation_loss_and_saves_everything(demo_store):
    report = train(demo_store, "ml", TrainConfig(arch="multilabel", epochs=12, patience=12,
                                                 **FAST), progress=False)
    val = report.history["val_loss"].to_numpy()
    assert val.min() < val[0] - 0.02, val
    files = ModelFiles(featurestore.open(demo_store), "ml")
    config = files.read_config()
    assert config["complete"] and config["classes"] == report.classes
    assert config["feature_set"] == featurestore.open(demo_store).feature_set().hash
    assert len(config["classes"]) == 10 and 0 < config["metrics"]["track_lrap"] <= 1
    split = files.read_frame("split.parquet")
    assert set(split["side"]) == {"train", "val", "test"}
    history = files.read_frame("history.csv")
    assert len(history) == 12 and list(history["epoch"]) == list(range(12))
    weights = files.load_torch("weights", "model.pt")
    assert "standardize.mean" in weights and weights["standardize.std"].min() > 0
    assert files.fs.cat_file(files.path("curves.png"))[:4] == b"\x89PNG"
    with pytest.raises(TrainingError, match="already exists"):
        train(demo_store, "ml", TrainConfig(arch="multilabel", epochs=1, **FAST),
              progress=False)
    # a request refused is refused before the model it would overwrite is removed
    digest = files.weights_digest(["model"])
    named = {k: v for k, v in FAST.items() if k != "min_tracks"}  # --labels picks the classes
    with pytest.raises(TrainingError, match="NotAGenre"):
        train(demo_store, "ml", TrainConfig(arch="multilabel", labels=("NotAGenre",), **named),
              progress=False, overwrite=True)
    assert files.read_config()["complete"] and files.weights_digest(["model"]) == digest
    # so is one refused only once its tiles are counted, or its selection's folds cut
    for refused, words in ((TrainConfig(arch="linear", memory_budget_mb=0.001, min_tracks=6),
                            "need .* MiB, above the memory budget of 0.001 MiB"),
                           (TrainConfig(arch="kernel", mixup=0.5, **FAST),
                            r"optimizer \(--optimizer\), learning_rate \(--learning-rate\), "
                            r"mixup \(--mixup\) do not apply to 'kernel': "
                            "optimizer, learning_rate are used only by pooled, dnn, cnn, "
                            "ensemble, multilabel; mixup is used only by pooled; leave them out"),
                           (TrainConfig(candidates=("linear", "dnn"), **FAST),
                            "auto compares track-level models"),
                           (TrainConfig(folds=1000, **FAST), "cannot make 1000 folds")):
        with pytest.raises(TrainingError, match=words):
            train(demo_store, "ml", refused, progress=False, overwrite=True)
    assert files.read_config()["complete"] and files.weights_digest(["model"]) == digest
    for device, words in (("gpu", "use auto .*, cpu, cuda or cuda:N"),
                          ("cuda:7", "no CUDA device on|has [0-9]+ CUDA device")):
        if device == "cuda:7" and torch.cuda.device_count() > 7:
            continue
        with pytest.raises(ValueError, match=f"device '{device}': {words}"):
            train(demo_store, "ml", TrainConfig(arch="multilabel", device=device, **FAST),
                  progress=False, overwrite=True)
    assert files.read_config()["complete"] and files.weights_digest(["model"]) == digest
    with pytest.raises(TrainingError, match="name at least two labels"):  # one, twice spelled
        train(demo_store, "one", TrainConfig(arch="multilabel", labels=("Drama", "drama"),
                                             **named), progress=False)
    assert not ModelFiles(featurestore.open(demo_store), "one").exists()


class _Stop(Exception):
    pass


def test_resume_continues_where_it_stopped(demo_store):
    config = TrainConfig(arch="cnn", epochs=5, patience=5, checkpoint_seconds=0, **FAST)
    whole = train(demo_store, "cnn-whole", config, progress=False)

    def stop_after_two(row):
        if row["epoch"] == 1:
            raise _Stop()

    with pytest.raises(_Stop):
        train(demo_store, "cnn-cut", config, progress=False, on_epoch=stop_after_two)
    files = ModelFiles(featurestore.open(demo_store), "cnn-cut")
    assert not files.read_config()["complete"]
    ran = []  # the epochs the second call trains: those after its checkpoint only
    # how often checkpoints are written is no setting of the model: it may change on resume
    resumed = train(demo_store, "cnn-cut", replace(config, checkpoint_seconds=60),
                    progress=False, on_epoch=ran.append)
    assert [row["epoch"] for row in ran] == [2, 3, 4]
    assert resumed.resumed and list(resumed.history["epoch"]) == list(range(5))
    np.testing.assert_allclose(resumed.history["val_loss"], whole.history["val_loss"],
                               rtol=1e-4)
    with pytest.raises(TrainingError, match="other settings"):
        files.write_config({**files.read_config(), "complete": False})
        train(demo_store, "cnn-cut", TrainConfig(arch="cnn", epochs=7, patience=5, **FAST),
              progress=False)


def test_feature_set_mismatch_is_refused(demo_store):
    store = featurestore.open(demo_store)
    files = ModelFiles(store, "elsewhere")
    files.write_config({"name": "elsewhere", "feature_set": "0123456789abcdef",
                        "complete": False, "train_config": TrainConfig().to_dict()})
    with pytest.raises(TrainingError, match="feature set 0123456789abcdef.*another spec"):
        train(demo_store, "elsewhere", TrainConfig(), progress=False)
    other = featurestore.FeatureSpec(tile_frames=50).hash
    with pytest.raises(featurestore.StoreError, match=f"no feature set {other}"):
        train(demo_store, "x", TrainConfig(feature_set=other), progress=False)
    with pytest.raises(TrainingError, match="Polka"):
        train(demo_store, "y", TrainConfig(labels=("Drama", "Polka")), progress=False)
