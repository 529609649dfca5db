"""The ``featurestore`` command: one entry point for every stage.

Exit codes: 0 success; 1 unexpected error; 2 bad command line; 3 invalid catalog (nothing
changed); 4 built, but some tracks failed (each recorded with its reason); 5 the store cannot
be used (busy, other layout version, unreadable).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import warnings

from featurestore.build import (COMMIT_INTERVAL_S, EXIT_CATALOG, EXIT_ERROR, EXIT_STORE,
                                EXIT_USAGE, build)
from featurestore.errors import StoreError
from featurestore.spec import FeatureSpec, TileEncoding


def _storage_options(pairs: list[str]) -> dict:
    """``key=value`` pairs; values are parsed as JSON when they can be (numbers, booleans,
    objects), else kept as strings. ``client_kwargs.endpoint_url=...`` nests."""
    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--storage-option {pair!r} is not key=value")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = parsed
    return out


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster (default: a LocalCluster on this machine)")
    g.add_argument("--scheduler", metavar="ADDR",
                   help="address of a running Dask scheduler (or set DASK_SCHEDULER_ADDRESS)")
    g.add_argument("--scheduler-file", metavar="FILE", help="a Dask scheduler file")
    g.add_argument("--workers", type=int, metavar="N",
                   help="LocalCluster worker processes (default: one per core)")


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("feature spec (defaults are the reference study's)")
    g.add_argument("--spec", metavar="JSON", help="a JSON file of FeatureSpec fields")
    for field, kind in (("sample_rate", int), ("n_fft", int), ("hop_length", int),
                        ("n_mels", int), ("n_mfcc", int), ("tile_frames", int),
                        ("tile_hop", int)):
        g.add_argument(f"--{field.replace('_', '-')}", type=kind, dest=field, metavar="N")
    g.add_argument("--chunk-tiles", type=int, default=TileEncoding.chunk_tiles, metavar="N",
                   help="tiles per Zarr chunk for a new feature set (default %(default)s)")


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="store path or URL (file://, s3://, memory://)")
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE", default=[],
                   help="fsspec option for the store, e.g. "
                        "client_kwargs.endpoint_url=http://127.0.0.1:9000 (repeatable)")


def _add_model_args(p: argparse.ArgumentParser, version: bool = False) -> None:
    p.add_argument("--model", required=True, help="model name in the store")
    if version:
        p.add_argument("--version", help="a scored version (default: the model's current one)")


def _add_filter_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters (all given must hold; repeat an option for any of "
                             "several values)")
    g.add_argument("--catalog", help="one catalog of the store (default: all)")
    g.add_argument("--film", action="append", metavar="NAME", help="film title, exact")
    g.add_argument("--composer", action="append", metavar="NAME", help="composer, exact")
    g.add_argument("--year", metavar="Y|FROM:TO", help="release year or inclusive range, "
                                                       "e.g. 1960:1969, 1990:, :1979")
    g.add_argument("--genre", action="append", metavar="LABEL",
                   help="has any of these labels (IMDB aliases accepted for genres)")
    g.add_argument("--all-genres", action="append", metavar="LABEL", help="has all of these")
    g.add_argument("--exclude-genre", action="append", metavar="LABEL", help="has none of these")
    g.add_argument("--labels", default="genres", metavar="COLUMN",
                   help="the label column the genre options and statistics use "
                        "(default %(default)s; any list or string column)")
    g.add_argument("--status", action="append", metavar="STATUS",
                   help="build status: ok, pending, or a failure kind")
    g.add_argument("--where", metavar="EXPR",
                   help="free predicate, e.g. \"1960 <= year < 1970 and contains(composer, "
                        "'morricone') and n_tiles >= 3\"")
    g.add_argument("--feature-set", metavar="HASH", help="whose build status to use")


def _open_store(args: argparse.Namespace):
    import featurestore

    return featurestore.open(args.store, _storage_options(args.storage_option) or None)


def _filters(args: argparse.Namespace) -> dict:
    return {"catalog": args.catalog, "feature_set": args.feature_set, "film": args.film,
            "composer": args.composer, "year": args.year, "genres": args.genre,
            "all_genres": args.all_genres, "exclude_genres": args.exclude_genre,
            "labels": args.labels, "status": args.status, "where": args.where}


def _spec(args: argparse.Namespace) -> FeatureSpec:
    fields = {}
    if args.spec:
        with open(args.spec) as f:
            fields.update(json.load(f))
    for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "n_mfcc", "tile_frames",
                 "tile_hop"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    return FeatureSpec.from_dict(fields)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featurestore", description="A dataset-and-feature store for music audio.",
        epilog="exit codes: 0 ok, 1 error, 2 usage, 3 invalid catalog, 4 some tracks failed, "
               "5 store unusable (busy, other layout, permission denied, no space, "
               "missing bucket)")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="extract MFCC tiles of a catalog into a store",
                       description="Build or update a catalog's tiles. Incremental: unchanged "
                                   "tracks are skipped; rerun after an interruption to finish.")
    b.add_argument("catalog", help="catalog file: .csv, .tsv, .parquet or .jsonl (path or URL)")
    b.add_argument("--store", required=True, help="store path or URL (file://, s3://, memory://)")
    b.add_argument("--catalog", dest="name", help="catalog name in the store (default: file stem)")
    b.add_argument("--rebuild", action="store_true", help="extract every track again")
    b.add_argument("--storage-option", action="append", metavar="KEY=VALUE", default=[],
                   help="fsspec option for the store and audio, e.g. "
                        "client_kwargs.endpoint_url=http://127.0.0.1:9000 (repeatable)")
    b.add_argument("--batch-seconds", type=float, metavar="S",
                   help="audio seconds per Dask task (default: sized from library and workers)")
    b.add_argument("--commit-seconds", type=float, metavar="S", default=COMMIT_INTERVAL_S,
                   help="seconds between commits while batches finish; committed tracks are "
                        "visible and survive a kill (default %(default)s; 0: every batch)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_cluster_args(b)
    _add_spec_args(b)

    t = sub.add_parser("tracks", help="list tracks matching filters",
                       description="Tracks with their metadata and build status. Filters on "
                                   "catalog columns are pushed down to the Parquet scan.")
    _add_store_args(t)
    _add_filter_args(t)
    t.add_argument("--columns", metavar="A,B,...", help="output columns (default: all)")
    t.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table",
                   help="table (default), csv, json (one object per line) or parquet")
    t.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    t.add_argument("--limit", type=int, metavar="N", help="at most N rows")
    t.add_argument("--lazy", action="store_true",
                   help="read and write one row group at a time (bounded memory; csv, json, "
                        "parquet)")

    i = sub.add_parser("info", help="summary of a store",
                       description="Tracks, hours, tiles, failures, feature sets and size on "
                                   "disk.")
    _add_store_args(i)
    i.add_argument("--format", choices=["text", "json"], default="text")

    st = sub.add_parser("stats", help="catalog statistics: membership, bigrams, years",
                        description="Class membership by label (tracks, tiles, hours), label "
                                    "bigrams, release year per label and labels per track, over "
                                    "the tracks matching the filters.")
    _add_store_args(st)
    _add_filter_args(st)
    st.add_argument("--min-tracks", type=int, metavar="N",
                    help="which classes keep at least N tracks, and the tiles per class of a "
                         "balanced training set")
    st.add_argument("--top", type=int, default=5, metavar="N",
                    help="most and least frequent bigrams to show (default %(default)s)")
    st.add_argument("--plots", metavar="DIR", help="write PNG figures here")
    st.add_argument("--format", choices=["table", "json"], default="table")

    tr = sub.add_parser("train", help="train a tagger on the store's tiles",
                        description="Train a model (the study's dnn, cnn, ensemble of "
                                    "one-vs-rest CNNs, or a multi-label CNN) and save it into "
                                    "the store. Rerun the same command after an interruption to "
                                    "resume from the last checkpoint.")
    _add_store_args(tr)
    tr.add_argument("--name", required=True, help="model name in the store")
    tr.add_argument("--arch", default="cnn", choices=["dnn", "cnn", "ensemble", "multilabel"])
    tr.add_argument("--labels", metavar="A,B,...", help="classes (default: every label with "
                                                         "at least --min-tracks tracks)")
    tr.add_argument("--min-tracks", type=int, default=20, metavar="N")
    tr.add_argument("--label-column", default="genres", metavar="COLUMN",
                    help="catalog column holding the labels (default %(default)s)")
    tr.add_argument("--group-by", metavar="COLUMN",
                    help="split whole groups, e.g. film: no film on two sides")
    tr.add_argument("--test-size", type=float, default=0.1)
    tr.add_argument("--val-size", type=float, default=0.2)
    tr.add_argument("--balance", default="equal",
                    choices=["equal", "weights", "oversample", "none"])
    tr.add_argument("--epochs", type=int, default=200)
    tr.add_argument("--patience", type=int, default=20)
    tr.add_argument("--batch-size", type=int, default=128)
    tr.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    tr.add_argument("--learning-rate", type=float, default=0.01)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0")
    tr.add_argument("--no-mixed-precision", action="store_true")
    tr.add_argument("--loader-workers", type=int, default=0, metavar="N")
    tr.add_argument("--memory-budget-mb", type=float, default=1024.0, metavar="MB",
                    help="keep the run's tiles in memory when they fit (default %(default)s)")
    tr.add_argument("--feature-set", metavar="HASH")
    tr.add_argument("--overwrite", action="store_true", help="replace a model of that name")
    tr.add_argument("--no-progress", action="store_true")

    sc = sub.add_parser("score", help="score new or changed tracks with a trained model",
                        description="Batch scoring on Dask: every built track without a "
                                    "current score of the model's version is scored, and the "
                                    "run is committed into the store in one atomic write. "
                                    "Rerun after an interruption to finish.")
    _add_store_args(sc)
    _add_model_args(sc)
    sc.add_argument("--rescore", action="store_true",
                    help="score every track again, replacing this version's scores")
    sc.add_argument("--aggregate", choices=["mean", "max", "median"],
                    help="tile scores to track scores (default: the version's, else mean)")
    sc.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    sc.add_argument("--batch-size", type=int, metavar="N",
                    help="tiles per forward pass (default 16 on a CPU, 1024 on a GPU)")
    sc.add_argument("--batch-tiles", type=int, metavar="N",
                    help="tiles per Dask task (default: about 4 tasks per worker)")
    sc.add_argument("--no-progress", action="store_true")
    _add_cluster_args(sc)

    r = sub.add_parser("rankings", help="a track's ranked labels, or the best tracks for labels",
                       description="With --track: each label of the track with its score and "
                                   "rank. With --label (repeatable): the tracks that best fit "
                                   "all the labels together, with film, composer and year.")
    _add_store_args(r)
    _add_filter_args(r)
    _add_model_args(r, version=True)
    r.add_argument("--track", action="append", metavar="ID", help="track id (repeatable)")
    r.add_argument("--label", action="append", metavar="LABEL",
                   help="a label the tracks should fit (repeatable)")
    r.add_argument("--top", type=int, default=20, metavar="N",
                   help="how many tracks (default %(default)s)")
    r.add_argument("--combine", choices=["mean", "min", "geomean"], default="mean",
                   help="how several labels' scores combine (default %(default)s; min: the "
                        "weakest label counts)")
    r.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    r.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")

    e = sub.add_parser("evaluate", help="metrics of a model's scores on its split",
                       description="LRAP, coverage error (with its lower bound) and label "
                                   "ranking loss at tile and track level, per-class precision, "
                                   "recall and F1 with the top-k labels as predictions; a "
                                   "markdown report with figures.")
    _add_store_args(e)
    _add_model_args(e, version=True)
    e.add_argument("--split", choices=["test", "val", "train", "all"], default="test")
    e.add_argument("--top-k", type=int, default=5, metavar="K",
                   help="labels taken as predictions per track (default %(default)s, the "
                        "study's)")
    e.add_argument("--report", metavar="DIR",
                   help="report folder (default: evaluation/<split>/ in the version's scores)")
    e.add_argument("--json", action="store_true", help="print the figures as JSON")

    d = sub.add_parser("demo", help="the main job: demo library, build, train, score, evaluate",
                       description="The main job on the embedded default: generate the demo "
                                   "film-score library, build its store on a LocalCluster, "
                                   "train the ensemble briefly, score every track, evaluate "
                                   "and show a few rankings.")
    d.add_argument("--dir", default="demo-library", help="where to put it (default %(default)s)")
    d.add_argument("--tracks", type=int, default=48, help="number of cues (default %(default)s)")
    d.add_argument("--epochs", type=int, default=15,
                   help="training epochs per ensemble member (default %(default)s)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_cluster_args(d)
    return parser


def _cmd_build(args: argparse.Namespace) -> int:
    report = build(args.catalog, args.store, name=args.name, spec=_spec(args),
                   encoding=TileEncoding(chunk_tiles=args.chunk_tiles),
                   scheduler=args.scheduler, scheduler_file=args.scheduler_file,
                   n_workers=args.workers,
                   storage_options=_storage_options(args.storage_option) or None,
                   rebuild=args.rebuild, batch_seconds=args.batch_seconds,
                   commit_seconds=args.commit_seconds, progress=not args.no_progress)
    print(report.summary())
    return report.exit_code


def _flat_lists(frame):
    """List cells as ``a|b`` strings, the catalog convention, for CSV and tables."""
    import numpy as np

    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object and out[col].map(
                lambda v: isinstance(v, (list, np.ndarray))).any():
            out[col] = out[col].map(lambda v: "|".join(map(str, v))
                                    if isinstance(v, (list, np.ndarray)) else v)
    return out


def _write_frames(frames, fmt: str, output: str | None) -> int:
    """Write frames (an iterable, one after another) as one table; returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    binary = fmt == "parquet"
    if output:
        sink = open(output, "wb" if binary else "w", newline="" if not binary else None)
    else:
        sink = sys.stdout.buffer if binary else sys.stdout
    rows, writer = 0, None
    try:
        for n, frame in enumerate(frames):
            rows += len(frame)
            if fmt == "table":
                if len(frame) or n == 0:
                    sink.write(_flat_lists(frame).to_string(index=False, header=n == 0) + "\n")
            elif fmt == "csv":
                _flat_lists(frame).to_csv(sink, index=False, header=n == 0)
            elif fmt == "json":
                if len(frame):
                    text = frame.to_json(orient="records", lines=True, date_format="iso")
                    sink.write(text if text.endswith("\n") else text + "\n")
            else:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(sink, table.schema, compression="zstd")
                writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()
        if output:
            sink.close()
    return rows


def _cmd_tracks(args: argparse.Namespace) -> int:
    store = _open_store(args)
    columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
    tracks = store.tracks(columns=columns, lazy=args.lazy, **_filters(args))
    if args.lazy:
        def parts():
            left = args.limit
            for i in range(tracks.npartitions):
                frame = tracks.get_partition(i).compute()
                if left is not None:
                    frame, left = frame.head(left), left - min(left, len(frame))
                yield frame
                if left == 0:
                    return
        frames = parts()
    else:
        frames = [tracks.head(args.limit) if args.limit is not None else tracks]
    rows = _write_frames(frames, args.format, args.output)
    print(f"{rows} tracks", file=sys.stderr)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from featurestore.info import format_info, store_info

    info = store_info(_open_store(args))
    print(json.dumps(info, indent=2) if args.format == "json" else format_info(info))
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from catalogs import statistics
    from catalogs.plots import write_plots

    labels = args.labels
    tracks = _open_store(args).tracks(**_filters(args))
    tables = {
        "membership": statistics.membership(tracks, labels),
        "bigrams_most": statistics.bigrams(tracks, labels).head(args.top),
        "bigrams_least": statistics.bigrams(tracks, labels).iloc[::-1].head(args.top),
        "year": statistics.year_by_label(tracks, labels),
        "labels_per_track": statistics.labels_per_track(tracks, labels),
    }
    if args.min_tracks is not None:
        tables["selection"] = statistics.class_selection(tracks, args.min_tracks, labels)
    if args.format == "json":
        out = {k: json.loads(v.reset_index().to_json(orient="records")) for k, v in tables.items()}
        out["tracks"] = len(tracks)
        out["mean_labels_per_track"] = tables["labels_per_track"].attrs["mean"]
        if "selection" in tables:
            out["selection_summary"] = tables["selection"].attrs
        print(json.dumps(out, indent=2))
    else:
        _print_stats(tracks, tables, labels, args)
    if args.plots:
        for path in write_plots(tracks, args.plots, labels):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _print_stats(tracks, tables: dict, labels: str, args: argparse.Namespace) -> None:
    membership = tables["membership"].copy()
    membership["share"] = (membership["share"] * 100).round(1).astype(str) + "%"
    membership["hours"] = membership["hours"].round(2)
    print(f"{len(tracks)} tracks; class membership by {labels}:")
    print(membership.to_string())
    print(f"\nmost frequent {labels} pairs:")
    print(tables["bigrams_most"].to_string(index=False))
    print(f"\nleast frequent {labels} pairs:")
    print(tables["bigrams_least"].to_string(index=False))
    print("\nrelease year per label (mean, sample std):")
    print(tables["year"].round(1).to_string())
    per_track = tables["labels_per_track"]
    print(f"\nlabels per track (mean {per_track.attrs['mean']:.2f}):")
    print(per_track.to_frame().T.to_string(index=False))
    if "selection" in tables:
        sel = tables["selection"]
        a = sel.attrs
        print(f"\nclasses with at least {args.min_tracks} tracks: {a['kept_classes']} of "
              f"{len(sel)}; a balanced training set keeps {a['per_class']} tiles per class, "
              f"{a['tiles_kept']} in all (of {a['tiles_available']} tile-labels in those "
              "classes)")
        print(sel.to_string())


def _cmd_train(args: argparse.Namespace) -> int:
    from training import TrainConfig, train

    config = TrainConfig(
        arch=args.arch, labels=tuple(x.strip() for x in (args.labels or "").split(",")
                                     if x.strip()),
        min_tracks=args.min_tracks, label_column=args.label_column, group_by=args.group_by,
        test_size=args.test_size, val_size=args.val_size, balance=args.balance,
        epochs=args.epochs, patience=args.patience, batch_size=args.batch_size,
        optimizer=args.optimizer, learning_rate=args.learning_rate, seed=args.seed,
        device=args.device, mixed_precision=not args.no_mixed_precision,
        loader_workers=args.loader_workers, memory_budget_mb=args.memory_budget_mb,
        feature_set=args.feature_set)
    report = train(_open_store(args), args.name, config, overwrite=args.overwrite,
                   progress=not args.no_progress)
    print(report.summary())
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from scoring import score

    report = score(_open_store(args), args.model, rescore=args.rescore,
                   aggregate=args.aggregate, device=args.device, batch_size=args.batch_size,
                   batch_tiles=args.batch_tiles, scheduler=args.scheduler,
                   scheduler_file=args.scheduler_file, n_workers=args.workers,
                   progress=not args.no_progress)
    print(report.summary())
    return report.exit_code


def _cmd_rankings(args: argparse.Namespace) -> int:
    from scoring import best_tracks, track_rankings

    store = _open_store(args)
    if bool(args.track) == bool(args.label):
        raise ValueError("give --track (a track's labels) or --label (the best tracks), "
                         "not both")
    if args.track:
        frame = track_rankings(store, args.model, args.track, args.catalog, args.version)
    else:
        filters = {k: v for k, v in _filters(args).items()
                   if k not in ("feature_set", "status")}
        frame = best_tracks(store, args.model, args.label, args.top, args.combine,
                            args.version, **filters)
    _write_frames([frame], args.format, args.output)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from featurestore.urls import join
    from scoring import evaluate, write_report
    from scoring.score_tables import score_table

    store = _open_store(args)
    ev = evaluate(store, args.model, args.split, args.top_k, args.version)
    target = args.report or join(score_table(store, args.model, ev.version).url, "evaluation",
                                 args.split)
    path = write_report(ev, target, store.storage_options if not args.report else None)
    print(ev.to_json() if args.json else ev.summary())
    print(f"report: {path}", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Generate, build, train, score, evaluate, show rankings: each step incremental, so a
    second run does only what changed."""
    import featurestore
    from catalogs.demo import generate_demo_library
    from featurestore.cluster import connect
    from scoring import best_tracks, evaluate, score, track_rankings, write_report
    from training import TrainConfig, TrainingError, train
    from training.model_files import ModelFiles

    print(f"generating the demo library in {os.path.abspath(args.dir)} ...", file=sys.stderr)
    catalog = generate_demo_library(args.dir, n_tracks=args.tracks)
    store_url = os.path.join(args.dir, "store")
    progress = not args.no_progress
    with connect(args.scheduler, args.scheduler_file, args.workers) as client:
        report = build(catalog, store_url, name="demo", client=client, progress=progress)
        print(report.summary())
        store = featurestore.open(store_url)
        tiles = store.tiles()
        print(f"{tiles.sizes['tile']} tiles of {tiles.sizes['coefficient']} x "
              f"{tiles.sizes['frame']} (feature set {tiles.attrs['feature_set']})")

        model = "demo-ensemble"
        files = ModelFiles(store, model)
        if files.exists() and files.read_config().get("complete"):
            print(f"\nmodel {model!r} is already trained: kept", file=sys.stderr)
        else:
            config = TrainConfig(arch="ensemble", min_tracks=6, test_size=0.25,
                                 epochs=args.epochs, patience=5, optimizer="adam",
                                 learning_rate=1e-3, device="cpu")
            print(f"\ntraining {model!r} ...", file=sys.stderr)
            try:
                print(train(store, model, config, progress=False).summary())
            except TrainingError as exc:  # a --tracks too small to split by class
                print(f"not training on this library ({exc}); use --tracks 48 or more to "
                      "see training, scoring and evaluation", file=sys.stderr)
                return report.exit_code

        print(score(store, model, client=client, progress=progress).summary())
    ev = evaluate(store, model, "test")
    path = write_report(ev, os.path.join(args.dir, "evaluation"))
    print(f"\n{ev.summary()}\nreport: {path}")
    tracks = store.tracks(status="ok").head(2)["track_id"].tolist()
    shown = ["track_id", "rank", "label", "score", "film", "genres"]
    print("\n" + _flat_lists(track_rankings(store, model, tracks)[shown]).to_string(index=False))
    classes = list(ev.classes)
    wanted = [c for c in ("Thriller", "Sci-Fi") if c in classes] or classes[:2]
    best = best_tracks(store, model, wanted, top=5)
    print(f"\nbest fits for {' + '.join(wanted)}:")
    print(_flat_lists(best.drop(columns=["catalog"])).to_string(index=False))
    return report.exit_code


# OSErrors by which storage refuses a write, beside permission denied and not found.
_STORAGE_ERRNOS = {errno.ENOSPC: "no space left", errno.EDQUOT: "quota exceeded",
                   errno.EROFS: "read-only file system"}


def _storage_error(exc: OSError) -> bool:
    """Denied, full, read-only or missing (a bucket): the store's storage refused us."""
    return isinstance(exc, (PermissionError, FileNotFoundError)) or exc.errno in _STORAGE_ERRNOS


def _storage_reason(exc: OSError) -> str:
    kind = ("permission denied" if isinstance(exc, PermissionError)
            else _STORAGE_ERRNOS.get(exc.errno))
    text = exc.strerror or str(exc)
    reason = kind if kind and kind.lower() in text.lower() else (
        f"{kind}: {text}" if kind else text)
    return f"{reason} ({exc.filename})" if exc.filename else reason


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    from catalogs.reader import CatalogError, UnknownGenreWarning

    parser = _parser()
    args = parser.parse_args(argv)
    warnings.simplefilter("always", UnknownGenreWarning)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    commands = {"build": _cmd_build, "demo": _cmd_demo, "tracks": _cmd_tracks,
                "info": _cmd_info, "stats": _cmd_stats, "train": _cmd_train,
                "score": _cmd_score, "rankings": _cmd_rankings, "evaluate": _cmd_evaluate}
    try:
        return commands[args.command](args)
    except CatalogError as exc:
        print(f"error: invalid catalog: {exc}", file=sys.stderr)
        return EXIT_CATALOG
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE
    except (ValueError, argparse.ArgumentTypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: committed tracks are kept; run the same command again to finish",
              file=sys.stderr)
        return 130
    except OSError as exc:
        if not _storage_error(exc):
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_ERROR
        where = getattr(args, "store", None)
        print(f"error: store{f' {where!r}' if where else ''} cannot be used: "
              f"{_storage_reason(exc)}. What earlier runs committed is intact; fix this and "
              "run the same command again.", file=sys.stderr)
        return EXIT_STORE
    except Exception as exc:  # the last line of defence: say what happened, exit non-zero
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

