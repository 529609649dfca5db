"""The command line itself: every stage's commands under one ``featurestore``, help and
queries that load no library they do not use, training options that are TrainConfig's
fields, and the exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

import featurestore
from catalogs.reader import CatalogError
from featurestore.build import BuildReport
from featurestore.cli import _explain, commands, parser
from featurestore.errors import StoreBusyError
from featurestore.exit_codes import ExitCode, describe, exit_code_for
from scoring.score import ScoreReport
from tests.helpers import cli, cli_modules, run_cli, small_library
from training.cli import TRAIN, config_from, given_settings
from training.config import ARCHITECTURES, BALANCING, FIELD_HELP, OPTIMIZERS, TrainConfig

#: What a training or scoring run, or a build, needs; the store's queries and help do not.
HEAVY = {"torch", "distributed", "librosa", "scipy.signal", "sklearn", "xarray", "numba"}


def test_help_lists_every_stage_and_loads_no_data_library():
    res, modules = cli_modules("--help")
    assert res.returncode == 0, res.stderr
    for name in ("build", "tracks", "info", "stats", "train", "score", "rankings", "evaluate",
                 "demo"):
        assert f"    {name} " in res.stdout
    assert " ".join(describe().split()) in " ".join(res.stdout.split())
    assert not modules & (HEAVY | {"numpy", "pandas", "pyarrow", "zarr", "dask"}), modules
    assert "featurestore.cli" in modules and "training.cli" in modules  # registered, loaded
    res = subprocess.run(cli("--version"), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == f"featurestore {featurestore.__version__}"


def test_queries_load_neither_training_nor_build_libraries(tmp_path, dask_client):
    lib = small_library(tmp_path / "lib", n=2)
    url = str(tmp_path / "store")
    featurestore.build(lib, url, client=dask_client, progress=False)
    res, modules = cli_modules("tracks", "--store", url, "--columns", "track_id", "--format",
                               "csv")
    assert res.stdout.split() == ["catalog,track_id", "catalog,s000", "catalog,s001"]
    assert not modules & (HEAVY | {"zarr", "dask"}), modules & (HEAVY | {"zarr", "dask"})
    res, modules = cli_modules("info", "--store", url)
    assert res.returncode == 0 and "2 tracks" in res.stdout, res.stdout
    # the slots come from the tile array's zarr.json: no Zarr for a summary
    assert not modules & (HEAVY | {"zarr", "dask"}), modules & (HEAVY | {"zarr", "dask"})
    # A reader that stops reading (`| head`) ends the query quietly, as Python does (status 1).
    proc = subprocess.Popen(cli("tracks", "--store", url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the command prints anything: its first write finds no reader
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == ExitCode.ERROR
    assert "error" not in err and "Traceback" not in err, err


def test_train_options_are_train_config_fields(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("COLUMNS", "1000")  # help on one line per option
    p = parser(commands(), "train")
    base = ["train", "--store", "s", "--name", "m"]
    assert config_from(p.parse_args(base)) == TrainConfig()  # the dataclass's defaults
    args = p.parse_args(base + [
        "--arch", "ensemble", "--labels", "Drama, Western", "--min-tracks", "3",
        "--label-column", "mood", "--test-size", "0.2", "--val-size", "0.3", "--group-by",
        "film", "--seed", "7", "--balance", "weights", "--epochs", "4", "--patience", "2",
        "--batch-size", "32", "--optimizer", "adam", "--learning-rate", "0.001",
        "--momentum", "0.5", "--lr-decay", "constant", "--dense-units", "64", "--dropout",
        "0.1,0.2", "--device", "cpu", "--no-mixed-precision", "--loader-workers", "2",
        "--memory-budget-mb", "64", "--buffer-chunks", "4", "--feature-set", "abc"])
    assert config_from(args) == TrainConfig(
        arch="ensemble", labels=("Drama", "Western"), min_tracks=3, label_column="mood",
        test_size=0.2, val_size=0.3, group_by="film", seed=7, balance="weights", epochs=4,
        patience=2, batch_size=32, optimizer="adam", learning_rate=0.001, momentum=0.5,
        lr_decay="constant", dense_units=64, dropout=(0.1, 0.2), device="cpu",
        mixed_precision=False, loader_workers=2, memory_budget_mb=64.0, buffer_chunks=4,
        feature_set="abc")
    # an option given at its default value is given all the same: refused where it is ignored
    again = p.parse_args(base + ["--arch", "linear", "--mixup", "0.2", "--momentum", "0.9"])
    assert given_settings(again) == {"arch", "mixup", "momentum"}
    assert config_from(again) == TrainConfig(arch="linear") and TrainConfig().refusal() is None
    assert config_from(again).refusal(given_settings(again)).startswith(
        "momentum (--momentum), mixup (--mixup) do not apply to 'linear'")
    adam = p.parse_args(base + ["--arch", "cnn", "--optimizer", "adam", "--momentum", "0.9"])
    assert "is the sgd optimizer's, and adam" in config_from(adam).refusal(given_settings(adam))
    res = run_cli(capsys, "train", "--store", str(tmp_path / "s"), "--name", "m", "--arch",
                  "linear", "--mixup", "0.2")  # refused before the store is opened
    assert res.returncode == 2 and "mixup (--mixup) does not apply to 'linear'" in res.stderr
    assert not (tmp_path / "s").exists()
    shown = argparse.ArgumentParser()
    TRAIN.arguments(shown)
    text = " ".join(shown.format_help().split())
    for field in dataclasses.fields(TrainConfig):
        if field.name != "extra":  # a dict: Python callers only
            flag = f"--{field.name.replace('_', '-')}"
            assert flag in text and FIELD_HELP[field.name] in text.split(flag, 1)[1], flag
    for name, values in (("arch", ARCHITECTURES), ("balance", BALANCING),
                         ("optimizer", OPTIMIZERS)):
        assert f"--{name} {{{','.join(values)}}}" in text
    with pytest.raises(SystemExit):
        p.parse_args(base + ["--arch", "transformer"])


def test_exit_codes_are_defined_once():
    assert exit_code_for(CatalogError("no path column", source="catalog.csv")) == ExitCode.CATALOG == 3
    assert exit_code_for(StoreBusyError("busy")) == ExitCode.STORE == 5
    assert exit_code_for(PermissionError(13, "Permission denied", "/s")) == ExitCode.STORE
    assert exit_code_for(OSError(28, "No space left on device")) == ExitCode.STORE
    assert exit_code_for(ValueError("bad --year")) == ExitCode.USAGE == 2
    assert exit_code_for(KeyboardInterrupt()) == ExitCode.INTERRUPTED == 130
    # Ctrl-C: a rerun goes on from what was committed, except after an option that redoes all
    said = [_explain(KeyboardInterrupt(), ExitCode.INTERRUPTED, argparse.Namespace(**given))
            for given in ({"store": "s"}, {"rebuild": False}, {"rebuild": True},
                          {"rescore": True})]
    assert said[0] == said[1] and said[0].endswith("run the same command again to go on from "
                                                   "there")
    assert "run again with --rebuild, it extracts every track again, those this run reached " \
        "too; without it, the tracks this run did not reach keep their earlier tiles" in said[2]
    assert "--rescore, it scores every track again" in said[3] and said[3].endswith("scores")
    assert exit_code_for(OSError(5, "Input/output error")) == ExitCode.ERROR == 1
    assert exit_code_for(RuntimeError("bug")) == ExitCode.ERROR
    assert all(f"{code.value} {code.meaning}" in describe() for code in ExitCode)
    failed = BuildReport("c", "f", "r", failures=[("t1", "corrupt", "truncated")])
    assert failed.exit_code is ExitCode.TRACKS_FAILED
    assert BuildReport("c", "f", "r").exit_code is ExitCode.OK
    one = BuildReport("c", "f", "r", n_tracks=1, built=1, tiles_written=1, commits=1).summary()
    assert "  1 track: 1 extracted" in one and "1 tile written, 1 commit, " in one
    assert ScoreReport("m", "v", "f", "r", "mean").exit_code is ExitCode.OK


def test_reading_scores_and_models_loads_no_torch():
    """Rankings and evaluations read a model's config and split, never its weights."""
    probe = ("import sys, scoring.rankings, scoring.evaluate, scoring.cli; "
             "print(sorted({'torch', 'distributed'} & set(sys.modules)))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


def test_text_tables_read_as_people_read_numbers():
    """Scores with four decimals (pandas alone writes 1.225482e-07 once a column spans a
    wide range), whole numbers with gaps as integers, list cells as a|b, and no index."""
    import numpy as np
    import pandas as pd

    from featurestore.cli import table_text

    frame = pd.DataFrame({"track": ["t1", "t2"], "score": [0.9999700, 1.225482e-07],
                          "epochs": [3.0, np.nan], "genres": [["Drama", "Romance"], []]})
    assert [line.split() for line in table_text(frame).splitlines()] == [
        ["track", "score", "epochs", "genres"], ["t1", "1.0000", "3", "Drama|Romance"],
        ["t2", "0.0000", "<NA>"]]
    assert table_text(frame, header=False).splitlines()[0].split() == ["t1", "1.0000", "3",
                                                                        "Drama|Romance"]
