"""The fused ensemble: the same function as its members, the same training steps as training
each member alone, stopped members left alone, runs through ``train`` that save, score and
resume as member-by-member runs do, and its benchmark on tiny sizes."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import featurestore
from scoring.score_tasks import ScoreJob, loaded_model, score_tiles
from training import TrainConfig, TrainingError, train
from training.fused import FusedEnsemble, FusedTrainer
from training.model_files import ModelFiles
from training.models import Ensemble, build_model, member, same_pad
from tests.helpers import small_library

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (8, 16)  # small tiles (three 2x2 pools leave 1 x 2) keep the float64 steps quick


def _ensemble(n: int = 4, seed: int = 0) -> Ensemble:
    """An ensemble whose members each have their own standardization."""
    torch.manual_seed(seed)
    model = build_model("ensemble", SHAPE, n).eval()
    for k, net in enumerate(model.members):
        net.standardize.set(torch.randn(SHAPE) * 0.1 + k, torch.rand(SHAPE) + 0.5)
    return model


def test_fused_forward_equals_the_members():
    model = _ensemble()
    fused = FusedEnsemble(list(model.members)).eval()
    x = torch.randn(6, 1, *SHAPE) * 3
    per_member = torch.randn(4, 5, 1, *SHAPE) * 3
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(fused(x), expected, atol=1e-5, rtol=1e-5)
        channels_last = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fused(channels_last), expected, atol=1e-5, rtol=1e-5)
        own = torch.stack([net(per_member[k])[:, 0] for k, net in enumerate(model.members)])
        torch.testing.assert_close(fused.forward_members(per_member), own, atol=1e-5,
                                   rtol=1e-5)
        some = torch.tensor([3, 1])
        torch.testing.assert_close(fused.forward_members(per_member[some], some), own[some],
                                   atol=1e-5, rtol=1e-5)
        for k in range(4):
            torch.testing.assert_close(fused.forward_member(per_member[k], k), own[k],
                                       atol=1e-5, rtol=1e-5)
    # back to members: the same state dicts, keys and values
    for back, net in zip(fused.to_members(), model.members, strict=True):
        theirs = net.state_dict()
        assert list(back.state_dict()) == list(theirs)
        for key, value in back.state_dict().items():
            assert torch.equal(value, theirs[key]), key
    with pytest.raises(ValueError, match="ensemble members"):
        FusedEnsemble([build_model("cnn", (16, 16), 3)])


def test_convolutions_pad_as_keras_and_run_channels_last(monkeypatch):
    channels_last = torch.channels_last
    for kernel, (before, after) in ((2, (0, 1)), (3, (1, 1)), (5, (2, 2))):
        for channels in (1, 4):
            x = torch.randn(3, channels, 8, 16)
            padded = same_pad(x, kernel)
            assert torch.equal(padded, nn.ZeroPad2d((before, after, before, after))(x))
            assert padded.stride(1) == 1  # channels-last strides, one channel included
    # given plain one-channel tiles, every convolution's output is channels-last: the layout
    # oneDNN's pooling runs several times faster in (a one-channel input used to make the
    # first layer, and in the fused CPU path every layer, run in the classic layout)
    layouts = []
    conv2d = F.conv2d

    def recording(*args, **kwargs):
        out = conv2d(*args, **kwargs)
        layouts.append(out.is_contiguous(memory_format=channels_last))
        return out

    x = torch.randn(4, 1, *SHAPE)
    for model, tiles in ((build_model("cnn", (16, 32), 3), torch.randn(4, 1, 16, 32)),
                         (_ensemble(2), x)):
        hooks = [m.register_forward_hook(lambda _m, _i, out: layouts.append(
            out.is_contiguous(memory_format=channels_last)))
            for m in model.modules() if isinstance(m, nn.Conv2d)]
        model(tiles)
        for h in hooks:
            h.remove()
    assert len(layouts) == 4 + 2 * 3 and all(layouts), layouts
    layouts.clear()
    monkeypatch.setattr(F, "conv2d", recording)
    FusedEnsemble(list(_ensemble(2).members)).train().forward_member(x, 1)
    assert len(layouts) == 3 and all(layouts), layouts


def test_the_grouped_training_pass_compiles_to_one_graph():
    # --compile on a GPU compiles this pass; a break (a generator handed to dropout did it)
    # cuts it into pieces run eagerly between compiled ones
    import torch._dynamo

    fused = FusedEnsemble(list(_ensemble(3).members)).train()
    seeded = torch.Generator().manual_seed(0)
    explained = torch._dynamo.explain(fused.forward_members)(
        torch.randn(3, 4, 1, *SHAPE), None, None, seeded)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), \
        explained.break_reasons


def test_dropout_draws_its_share_from_the_run_s_generator():
    from training.fused import _dropout

    h = torch.ones(64, 32, 20, 50).contiguous(memory_format=torch.channels_last)
    for p in (0.1, 0.5):
        a = _dropout(h, p, True, torch.Generator().manual_seed(3))
        assert torch.equal(a, _dropout(h, p, True, torch.Generator().manual_seed(3)))
        assert not torch.equal(a, _dropout(h, p, True, torch.Generator().manual_seed(4)))
        assert abs((a == 0).double().mean().item() - p) < 0.003
        assert abs(a.double().mean().item() - 1) < 0.005  # the expectation kept
        assert a.is_contiguous(memory_format=torch.channels_last)
    # every channel and every position drops its share, in either layout
    for x in (h, torch.ones(64, 32, 20, 50)):
        dropped = (_dropout(x, 0.3, True, torch.Generator().manual_seed(1)) == 0).double()
        assert dropped.mean((0, 2, 3)).sub(0.3).abs().max() < 0.02
        assert dropped.mean((0, 1)).sub(0.3).abs().max() < 0.06
    assert _dropout(h, 0.3, False, torch.Generator()) is h


def _batches(rng: np.random.Generator, sizes: list[int], n_tiles: int):
    """Per-member batches: positions into the tiles and 0/1 targets, float64."""
    return [(torch.from_numpy(rng.choice(n_tiles, n, replace=False)),
             torch.from_numpy(rng.integers(0, 2, n).astype(np.float64))) for n in sizes]


def _padded(batches, rows, width):
    pos = torch.zeros(len(rows), width, dtype=torch.long)
    y = torch.zeros(len(rows), width, dtype=torch.float64)
    w = torch.zeros(len(rows), width, dtype=torch.float64)
    for j, k in enumerate(rows):
        p, t = batches[k]
        pos[j, :len(p)], y[j, :len(t)], w[j, :len(p)] = p, t, 1 / len(p)
    return pos, y, w, [len(batches[k][0]) for k in rows]


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("adam", 1e-3)])
@pytest.mark.parametrize("grouped", [False, True])
def test_fused_steps_equal_training_each_member_alone(optimizer, lr, grouped):
    """Three steps, members with batches of different sizes, member 1 sitting one step out:
    the same weights as torch.optim on each member alone (float64, no dropout)."""
    torch.manual_seed(1)
    nets = [member(SHAPE, dropout=(0, 0, 0, 0)).double() for _ in range(3)]
    alone = copy.deepcopy(nets)
    fused = FusedEnsemble(nets).double()
    fused.copy_from(nets)
    tiles = torch.randn(100, *SHAPE, dtype=torch.float64)
    config = TrainConfig(arch="ensemble", optimizer=optimizer, learning_rate=lr,
                         batch_size=40, mixed_precision=False)
    trainer = FusedTrainer(fused, tiles, config, grouped=grouped, threads=2)
    opts = [torch.optim.SGD(n.parameters(), lr=lr, momentum=0.9) if optimizer == "sgd"
            else torch.optim.Adam(n.parameters(), lr=lr) for n in alone]
    rng = np.random.default_rng(0)
    for step in range(3):
        batches = _batches(rng, [40, 33, 7], len(tiles))  # 40 and 33: two CPU tasks
        rows = [0, 2] if step == 1 else [0, 1, 2]
        for k in rows:
            p, t = batches[k]
            loss = F.binary_cross_entropy_with_logits(alone[k](tiles[p][:, None])[:, 0], t)
            opts[k].zero_grad()
            loss.backward()
            opts[k].step()
        with trainer.workers() as pool:
            trainer.step(rows, *_padded(batches, rows, 40), lr, pool)
    expected = FusedEnsemble(alone).double()
    expected.copy_from(alone)
    for got, want in zip(fused.stacks(), expected.stacks(), strict=True):
        torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("grouped", [False, True])
def test_a_stopped_member_no_longer_changes(grouped):
    model = build_model("ensemble", SHAPE, 3)
    fused = FusedEnsemble(list(model.members))
    tiles = torch.randn(100, *SHAPE)
    trainer = FusedTrainer(fused, tiles, TrainConfig(arch="ensemble", optimizer="adam",
                                                     batch_size=16), grouped=grouped)
    rng = np.random.default_rng(0)
    plans = [(rng.choice(100, 30), rng.integers(0, 2, 30).astype(np.float32))
             for _ in range(3)]
    with trainer.workers() as pool:
        trainer.epoch([0, 1, 2], plans, 0, 1e-3, pool)  # momentum and Adam state for all
        before = [t.detach().clone() for t in fused.stacks()]
        state = [[s.clone() for s in per] for per in trainer.optimizer.state]
        steps = trainer.optimizer.steps.clone()
        trainer.epoch([0, 2], [plans[0], plans[2]], 1, 1e-3, pool)  # member 1 has stopped
    for old, new in zip(before, fused.stacks()):
        assert torch.equal(new[1], old[1])
        assert not torch.equal(new[0], old[0]) and not torch.equal(new[2], old[2])
    for old, new in zip(state, trainer.optimizer.state):
        for o, n in zip(old, new):
            assert torch.equal(n[1], o[1])
    assert trainer.optimizer.steps[1] == steps[1] == 2  # 30 tiles in batches of 16
    assert trainer.optimizer.steps[0] == 4


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, dask_client):
    """24 tracks of 20 s (2 tiles each), four labels in turn, built with chunks of 8 tiles."""
    root = tmp_path_factory.mktemp("fused")
    catalog = small_library(root, n=24, seconds=20.0)
    url = str(root / "store")
    featurestore.build(catalog, url, name="lib", client=dask_client, progress=False,
                       encoding=featurestore.TileEncoding(chunk_tiles=8))
    return url


CONFIG = dict(arch="ensemble", optimizer="adam", learning_rate=1e-3, min_tracks=6,
              test_size=0.2, epochs=4, patience=4, checkpoint_seconds=0)


class _Stop(Exception):
    pass


def test_trained_ensemble_saves_member_files_that_load_score_and_resume(small_store):
    config = TrainConfig(**CONFIG)
    whole = train(small_store, "whole", config, progress=False)
    store = featurestore.open(small_store)
    files = ModelFiles(store, "whole")
    saved = files.read_config()
    assert saved["complete"] and saved["members"] == [f"member-{k:02d}" for k in
                                                      range(len(whole.classes))]
    assert len(whole.classes) >= 2 and 0 < saved["metrics"]["track_lrap"] <= 1
    assert list(whole.history["epoch"]) == list(range(4)) * len(whole.classes)
    assert files.load_torch("checkpoints", "ensemble.pt") is not None
    weights = files.load_torch("weights", "member-00.pt")
    assert "standardize.mean" in weights and "features.0.1.weight" in weights

    # The saved members load as an Ensemble, and score as the fused module does.
    model = files.load_model()
    assert isinstance(model, Ensemble) and not model.training
    tiles = np.asarray(store.feature_set().arrays().mfcc[:16], dtype=np.float32)
    cpu = torch.device("cpu")
    expected = score_tiles(model, tiles, False, cpu)
    job = ScoreJob(small_store, "whole", files.version(), saved["feature_set"], "",
                   tuple(whole.classes), False, "mean", "run", device="cpu")
    loaded, _, cross_fitted, _ = loaded_model(job)
    assert isinstance(loaded, Ensemble)  # on a CPU the members' own passes are the faster
    assert cross_fitted == {}  # a network ranks every track by its own scores
    fused = FusedEnsemble(list(model.members)).eval()  # what a GPU worker scores with
    np.testing.assert_allclose(score_tiles(fused, tiles, False, cpu), expected, atol=1e-5)
    np.testing.assert_allclose(score_tiles(loaded, tiles, False, cpu), expected, atol=1e-5)

    # Interrupted after its second epoch, the same call resumes and finishes the same model.
    def stop(row):
        if row["epoch"] == 1:
            raise _Stop()

    with pytest.raises(_Stop):
        train(small_store, "cut", config, progress=False, on_epoch=stop)
    cut = ModelFiles(store, "cut")
    began = cut.read_config()
    assert not began["complete"] and began["train_config"]["batch_size"] == 128
    # begun on a GPU, its defaults would have resolved to larger batches: refused here, and
    # the interrupted run is left as it was
    on_gpu = copy.deepcopy(began)
    on_gpu["train_config"]["batch_size"] = 1024
    cut.write_config(on_gpu)
    with pytest.raises(TrainingError, match="begun on another device.*batch_size 1024 there, "
                                            "128 here"):
        train(small_store, "cut", config, progress=False)
    assert cut.read_config() == on_gpu
    cut.write_config(began)
    ran = []  # the epochs the second call trains: those after its checkpoint only
    resumed = train(small_store, "cut", config, progress=False, on_epoch=ran.append)
    assert resumed.resumed and {row["epoch"] for row in ran} == {2, 3}
    np.testing.assert_allclose(resumed.history["val_loss"], whole.history["val_loss"],
                               rtol=1e-6)
    for key in saved["members"]:
        for name, value in cut.load_torch("weights", f"{key}.pt").items():
            torch.testing.assert_close(value, files.load_torch("weights", f"{key}.pt")[name],
                                       atol=1e-6, rtol=1e-6)


def test_members_train_one_by_one_when_tiles_do_not_fit_memory(small_store):
    report = train(small_store, "lazy", TrainConfig(**{**CONFIG, "epochs": 1},
                                                    memory_budget_mb=0.01), progress=False)
    files = ModelFiles(featurestore.open(small_store), "lazy")
    assert files.load_torch("checkpoints", "ensemble.pt") is None
    assert files.load_torch("checkpoints", "member-00.pt") is not None
    assert len(report.history) == len(report.classes)
    assert isinstance(files.load_model(), Ensemble)


def test_gpu_training_benchmark_runs_on_tiny_sizes(tmp_path):
    figures = tmp_path / "figures.json"
    out = subprocess.run(
        [sys.executable, os.path.join("benchmarks", "gpu_training.py"), "--tiles", "300",
         "--classes", "3", "--steps", "1", "--batch-sizes", "8", "--device", "cpu",
         "--dir", str(tmp_path), "--json", str(figures)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
        timeout=240)
    assert out.returncode == 0, out.stderr
    for line in ("loader, read into memory, 1 read thread(s):",
                 "loader, block-shuffle, 2 workers, 1 read thread(s):",
                 "members one after another:", "fused:", "fused, bfloat16 tiles:",
                 "the study's schedule:"):
        assert line in out.stdout, out.stdout
    assert "655 epochs" in out.stdout and "GPU utilization n/a" in out.stdout
    saved = json.loads(figures.read_text())
    assert all(rate > 0 for rate in saved["loader_tiles_per_s"].values())
    ways = {run["way"]: run for run in saved["training"]}
    assert set(ways) == {"members one after another", "fused", "fused, bfloat16 tiles"}
    assert all(run["member_tiles_per_s"] > 0 and run["study_schedule_h"] > 0
               for run in ways.values())