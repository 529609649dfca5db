"""The scoring commands: ``featurestore score``, ``rankings``, ``similar`` and ``evaluate``."""

from __future__ import annotations

import argparse
import sys

from featurestore.cli import (Command, add_cluster_args, add_filter_args, add_output_args,
                              add_store_args, filters, open_store, option_file, positive_int,
                              write_frames)


def _add_model_args(p: argparse.ArgumentParser, version: bool = False) -> None:
    p.add_argument("--model", required=True, help="model name in the store")
    if version:
        p.add_argument("--version", help="a scored version (default: the model's current one)")


def _score_arguments(p: argparse.ArgumentParser) -> None:
    from scoring.aggregate import AGGREGATES

    add_store_args(p)
    _add_model_args(p)
    p.add_argument("--rescore", action="store_true",
                   help="score every track again, replacing this version's scores")
    p.add_argument("--aggregate", choices=AGGREGATES,
                   help="tile scores to track scores (default: the version's, else mean)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--batch-size", type=positive_int, metavar="N",
                   help="tiles per forward pass (default 16 on a CPU, 1024 on a GPU)")
    p.add_argument("--batch-tiles", type=positive_int, metavar="N",
                   help="tiles per Dask task (default: about 4 tasks per worker)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_cluster_args(p)


def _score(args: argparse.Namespace) -> int:
    from scoring.score import score

    report = score(open_store(args), args.model, rescore=args.rescore,
                   aggregate=args.aggregate, device=args.device, batch_size=args.batch_size,
                   batch_tiles=args.batch_tiles, scheduler=args.scheduler,
                   scheduler_file=args.scheduler_file, n_workers=args.workers,
                   progress=not args.no_progress)
    print(report.summary())
    return report.exit_code


#: Tracks ``rankings --label`` lists unless ``--top`` says.
_TOP = 20


def _rankings_arguments(p: argparse.ArgumentParser) -> None:
    from scoring.rankings import COMBINE, DEFAULT_COMBINE

    add_store_args(p)
    add_filter_args(p, build_status=False)  # a model ranks its feature set's built tracks
    _add_model_args(p, version=True)
    p.add_argument("--track", action="append", metavar="ID", help="track id (repeatable)")
    p.add_argument("--label", action="append", metavar="LABEL",
                   help="a label the tracks should fit (repeatable)")
    p.add_argument("--top", type=positive_int, metavar="N",
                   help=f"how many tracks (default {_TOP}); with --track, each track's N best "
                        "labels (default all)")
    p.add_argument("--combine", choices=COMBINE,
                   help=f"how several labels' scores combine (default {DEFAULT_COMBINE}: their "
                        "geometric mean, high only where every label is; min: the weakest "
                        "label counts; mean: a strong label can carry a weak one)")
    add_output_args(p)


def _rankings(args: argparse.Namespace) -> int:
    from catalogs.labels import DEFAULT_LABELS
    from scoring.rankings import DEFAULT_COMBINE, label_answer, track_rankings

    store = open_store(args)
    if bool(args.track) == bool(args.label):
        raise ValueError(("give --track or --label, not both" if args.track else
                          "give --track ID (that track's labels ranked) or --label LABEL (the "
                          "tracks that best fit the labels; --genre filters on the catalog's "
                          "genres)"))
    chosen = filters(args)
    if args.track:
        if chosen.pop("labels") != DEFAULT_LABELS or any(
                v for k, v in chosen.items() if k != "catalog"):
            raise ValueError("--track takes no filter but --catalog: the filters narrow the "
                             "tracks that --label ranks")
        if args.combine:
            raise ValueError("--combine applies to --label: it combines the labels' scores")
        frame = track_rankings(store, args.model, args.track, args.catalog, args.version)
        if args.top:
            frame = frame[frame["rank"] <= args.top].reset_index(drop=True)
        write_frames([frame], args.format, args.output)
        return 0
    combine = args.combine or DEFAULT_COMBINE
    frame, quality = label_answer(store, args.model, args.label, args.top or _TOP, combine,
                                  args.version, **chosen)
    write_frames([frame], args.format, args.output)
    # how far to trust the answer, beside it (stderr: the table may be piped as data)
    if quality is not None:
        print(quality.summary(), file=sys.stderr)
    else:
        print(f"held out: not measured for version {args.version}, which a retrain has "
              "replaced (the model's split is its current version's)", file=sys.stderr)
    return 0


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    from scoring.evaluate import SPLITS
    from training.metrics import DEFAULT_TOP_K

    add_store_args(p)
    _add_model_args(p, version=True)
    p.add_argument("--split", choices=SPLITS, default=SPLITS[0])
    p.add_argument("--top-k", type=positive_int, default=DEFAULT_TOP_K, metavar="K",
                   help="labels taken as predictions per track (default %(default)s, the "
                        "study's)")
    p.add_argument("--report", metavar="DIR",
                   help="report folder (default: evaluation/<split>/ in the version's scores)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--no-similarity", action="store_true",
                   help="leave out the similarity figures (they read every track's tiles "
                        "once, for the feature-statistics baseline)")


def _evaluate(args: argparse.Namespace) -> int:
    from featurestore.urls import join
    from scoring.evaluate import evaluate
    from scoring.report import write_report
    from scoring.score_tables import score_table

    store = open_store(args)
    ev = evaluate(store, args.model, args.split, args.top_k, args.version,
                  similarity=not args.no_similarity)
    # the figures first: a report that cannot be written (a read-only store) loses nothing
    print(ev.to_json() if args.json else ev.summary(), flush=True)
    target = args.report or join(score_table(store, args.model, ev.version).url, "evaluation",
                                 args.split)
    with option_file("--report", args.report):
        path = write_report(ev, target, store.storage_options if not args.report else None)
    print(f"report: {path}", file=sys.stderr)
    return 0


def _similar_arguments(p: argparse.ArgumentParser) -> None:
    add_store_args(p)
    add_filter_args(p, build_status=False)  # neighbours among the model's scored tracks
    _add_model_args(p, version=True)
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--track", metavar="ID", help="a track of the library")
    query.add_argument("--audio", metavar="FILE",
                       help="a reference audio file (path or URL), need not be in the library: "
                            "extracted with the model's feature spec and embedded")
    p.add_argument("--track-catalog", metavar="NAME",
                   help="the catalog of --track, when several catalogs hold that id")
    p.add_argument("--top", type=positive_int, default=20, metavar="N",
                   help="how many tracks (default %(default)s)")
    p.add_argument("--exclude-own-film", action="store_true",
                   help="leave out tracks of the query track's own film")
    add_output_args(p)


def _similar(args: argparse.Namespace) -> int:
    from featurestore.cli import storage_options
    from scoring.similarity import similar

    store = open_store(args)
    chosen = filters(args)
    frame = similar(store, args.model, args.track, audio=args.audio, top=args.top,
                    track_catalog=args.track_catalog, exclude_own_film=args.exclude_own_film,
                    version=args.version,
                    storage_options=storage_options(args.storage_option) or None, **chosen)
    write_frames([frame], args.format, args.output)
    return 0


SCORE = Command(
    "score", "score new or changed tracks with a trained model", _score_arguments, _score,
    description="Batch scoring on Dask: every built track without a current score of the "
                "model's version is scored, and the run is committed into the store in one "
                "atomic write. Rerun after an interruption to finish.")
RANKINGS = Command(
    "rankings", "a track's ranked labels, or the best tracks for labels", _rankings_arguments,
    _rankings,
    description="With --track: each label of the track with its score and rank. With --label "
                "(repeatable): the tracks that best fit all the labels together, with film, "
                "composer and year.")
SIMILAR = Command(
    "similar", "the tracks most like a track or a reference audio file", _similar_arguments,
    _similar,
    description="Cosine similarity of the model's track embeddings (written by `featurestore "
                "score`): the --top tracks nearest a library track (--track) or a reference "
                "file (--audio), best first, with title, film, composer, year, genres and "
                "similarity. The filters of `tracks` (but --status and --feature-set) narrow the "
                "candidates.")
EVALUATE = Command(
    "evaluate", "metrics of a model's scores on its split", _evaluate_arguments, _evaluate,
    description="LRAP, coverage error (with its lower bound) and label ranking loss at tile "
                "and track level, per-class precision, recall and F1 with the top-k labels as "
                "predictions; a markdown report with figures; and for the split's tracks the "
                "same-film precision and label overlap (Jaccard) of their 10 nearest "
                "neighbours by the model's embeddings, against standardized feature "
                "statistics.")
