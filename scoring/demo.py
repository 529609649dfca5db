"""``featurestore demo``: the whole flow on the generated demo library, from catalog to
rankings. It lives in the last stage, the one package that may import every earlier one
(catalogs, featurestore, training) without data flowing back up."""

from __future__ import annotations

import argparse
import os
import sys

from featurestore.cli import Command, add_cluster_args, positive_int, table_text


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default="demo-library", help="where to put it (default %(default)s)")
    p.add_argument("--tracks", type=positive_int, default=48,
                   help="number of cues (default %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=20,
                   help="at most this many epochs of the networks model selection tries "
                        "(default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_cluster_args(p)


def _run(args: argparse.Namespace) -> int:
    """Generate, build, train, score, evaluate, show rankings: each step incremental, so a
    second run does only what changed."""
    import featurestore
    from catalogs.demo import generate_demo_library
    from featurestore.cluster import check_cluster_request, connect
    from scoring import (best_tracks, evaluate, ranking_quality, score, track_rankings,
                         write_report)
    from training import TrainConfig, TrainingError, train
    from training.model_files import ModelFiles

    store_url = os.path.join(args.dir, "store")
    check_cluster_request("featurestore demo", store_url, None, args.scheduler,
                          args.scheduler_file, args.workers)
    print(f"generating the demo library in {os.path.abspath(args.dir)} ...", file=sys.stderr)
    progress = not args.no_progress
    catalog = generate_demo_library(args.dir, n_tracks=args.tracks, progress=progress)
    with connect(args.scheduler, args.scheduler_file, args.workers) as client:
        report = featurestore.build(catalog, store_url, name="demo", client=client,
                                    progress=progress)
        print(report.summary())
        store = featurestore.open(store_url)
        tiles = store.tiles()
        print(f"{tiles.sizes['tile']} tiles of {tiles.sizes['coefficient']} x "
              f"{tiles.sizes['frame']} (feature set {tiles.attrs['feature_set']})")

        model = "demo-tagger"
        files = ModelFiles(store, model)
        if files.exists() and files.read_config().get("complete"):
            print(f"\nmodel {model!r} is already trained: kept", file=sys.stderr)
        else:
            # the default model selection (auto), sized for the small demo library
            config = TrainConfig(min_tracks=6, test_size=0.25, epochs=args.epochs,
                                 device="cpu")
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
    print("\n" + table_text(track_rankings(store, model, tracks)[shown]))
    classes = list(ev.classes)
    wanted = [c for c in ("Thriller", "Sci-Fi") if c in classes] or classes[:2]
    best = best_tracks(store, model, wanted, top=5)
    print(f"\nbest fits for {' + '.join(wanted)}:")
    print(table_text(best.drop(columns=["catalog"])))
    print(ranking_quality(store, model, wanted).summary())  # how far to trust that answer
    return report.exit_code


DEMO = Command(
    "demo", "the main job: demo library, build, train, score, evaluate", _arguments, _run,
    description="The main job on the embedded default: generate the demo film-score library, "
                "build its store on a LocalCluster, train with model selection, score every "
                "track, evaluate and show a few rankings.")
