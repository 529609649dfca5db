"""The store's own commands: ``build``, ``tracks``, ``info`` and ``stats``."""

from __future__ import annotations

import argparse
import json
import sys

from featurestore.cli import (Command, add_cluster_args, add_filter_args, add_output_args,
                              add_store_args, at_least, filters, open_store, option_file,
                              positive_int, storage_options, write_frames)
from featurestore.spec import KINDS, FeatureSpec, TileEncoding

#: The spec fields ``build`` takes as options (the rest come from ``--spec``).
_SPEC_OPTIONS = ("sample_rate", "n_fft", "hop_length", "n_mels", "n_mfcc", "tile_frames",
                 "tile_hop")


def _build_arguments(p: argparse.ArgumentParser) -> None:
    from featurestore.build import COMMIT_INTERVAL_S

    p.add_argument("catalog", help="catalog file: .csv, .tsv, .parquet or .jsonl (path or URL)")
    add_store_args(p, audio=True)
    p.add_argument("--catalog", dest="name", help="catalog name in the store (default: file stem)")
    p.add_argument("--rebuild", action="store_true", help="extract every track again")
    p.add_argument("--batch-seconds", type=at_least(float, 0, strict=True), metavar="S",
                   help="audio seconds per Dask task (default: sized from library and workers)")
    p.add_argument("--commit-seconds", type=at_least(float, 0), metavar="S",
                   default=COMMIT_INTERVAL_S,
                   help="seconds between commits while batches finish; committed tracks are "
                        "visible and survive a kill (default %(default)s; 0: every batch)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_cluster_args(p)
    g = p.add_argument_group("feature spec (defaults are the reference study's)")
    g.add_argument("--spec", metavar="JSON", help="a JSON file of FeatureSpec fields")
    g.add_argument("--kind", choices=KINDS,
                   help="features: mfcc (default, the study's) or logmel (--n-mels bands)")
    for name in _SPEC_OPTIONS:
        g.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name, metavar="N")
    g.add_argument("--chunk-tiles", type=positive_int, metavar="N",
                   help=f"tiles per Zarr chunk for a new feature set (default "
                        f"{TileEncoding.chunk_tiles}; an existing set keeps its own)")


def _spec(args: argparse.Namespace) -> FeatureSpec:
    fields = {}
    if args.spec:
        with option_file("--spec", args.spec), open(args.spec) as f:
            try:
                fields.update(json.load(f))
            except ValueError as exc:  # not JSON, or not text
                raise ValueError(f"--spec {args.spec}: not a JSON feature spec ({exc})") from None
    for name in ("kind", *_SPEC_OPTIONS):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    return FeatureSpec.from_dict(fields)


def _build(args: argparse.Namespace) -> int:
    from featurestore.build import build

    report = build(args.catalog, args.store, name=args.name, spec=_spec(args),
                   encoding=(TileEncoding(chunk_tiles=args.chunk_tiles) if args.chunk_tiles
                             else None),
                   scheduler=args.scheduler, scheduler_file=args.scheduler_file,
                   n_workers=args.workers,
                   storage_options=storage_options(args.storage_option) or None,
                   rebuild=args.rebuild, batch_seconds=args.batch_seconds,
                   commit_seconds=args.commit_seconds, progress=not args.no_progress)
    print(report.summary())
    return report.exit_code


def _tracks_arguments(p: argparse.ArgumentParser) -> None:
    add_store_args(p)
    add_filter_args(p)
    p.add_argument("--columns", metavar="A,B,...", help="output columns (default: all)")
    add_output_args(p)
    p.add_argument("--limit", type=positive_int, metavar="N", help="at most N rows")
    p.add_argument("--lazy", action="store_true",
                   help="read and write one row group at a time (bounded memory; csv, json, "
                        "parquet)")


def _tracks(args: argparse.Namespace) -> int:
    store = open_store(args)
    columns = None if args.columns is None else [c.strip() for c in args.columns.split(",")]
    tracks = store.tracks(columns=columns, lazy=args.lazy, **filters(args))
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
    rows = write_frames(frames, args.format, args.output)
    print(f"{rows} track{'s' * (rows != 1)}", file=sys.stderr)
    if args.lazy and not rows:  # read eagerly, an empty answer says which labels no track has
        store.tracks(columns=["track_id"], **filters(args))
    return 0


def _info_arguments(p: argparse.ArgumentParser) -> None:
    add_store_args(p)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--feature-set", metavar="HASH",
                   help="whose track statuses to count (a hash, or mfcc / logmel; default the "
                        "only one, the default spec's, or the one built last)")


def _info(args: argparse.Namespace) -> int:
    from featurestore.info import format_info, store_info

    info = store_info(open_store(args), args.feature_set)
    print(json.dumps(info, indent=2) if args.format == "json" else format_info(info))
    return 0


def _stats_arguments(p: argparse.ArgumentParser) -> None:
    add_store_args(p)
    add_filter_args(p)
    p.add_argument("--min-tracks", type=positive_int, metavar="N",
                   help="which classes keep at least N tracks, and the tiles per class of a "
                        "balanced training set")
    p.add_argument("--top", type=positive_int, default=5, metavar="N",
                   help="most and least frequent bigrams to show (default %(default)s)")
    p.add_argument("--plots", metavar="DIR", help="write PNG figures here")
    p.add_argument("--format", choices=["table", "json"], default="table")


def _stats(args: argparse.Namespace) -> int:
    from catalogs import statistics
    from catalogs.plots import write_plots

    labels = args.labels
    tracks = open_store(args).tracks(**filters(args))
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
        with option_file("--plots", args.plots):
            for path in write_plots(tracks, args.plots, labels):
                print(f"wrote {path}", file=sys.stderr)
    return 0


def _print_stats(tracks, tables: dict, labels: str, args: argparse.Namespace) -> None:
    membership = tables["membership"].copy()
    membership["share"] = (membership["share"] * 100).round(1).astype(str) + "%"
    membership["hours"] = membership["hours"].round(2)
    print(f"{len(tracks)} tracks; class membership by {labels}:")
    print(membership.reset_index().to_string(index=False))
    print(f"\nmost frequent {labels} pairs:")
    print(tables["bigrams_most"].to_string(index=False))
    print(f"\nleast frequent {labels} pairs:")
    print(tables["bigrams_least"].to_string(index=False))
    print("\nrelease year per label (mean, sample std):")
    print(tables["year"].round(1).reset_index().to_string(index=False))
    per_track = tables["labels_per_track"]
    counts = ", ".join(f"{n} on {tracks_with}" for n, tracks_with in per_track.items())
    print(f"\nlabels per track (mean {per_track.attrs['mean']:.2f}): {counts} tracks")
    if "selection" in tables:
        sel = tables["selection"]
        a = sel.attrs
        print(f"\nclasses with at least {args.min_tracks} tracks: {a['kept_classes']} of "
              f"{len(sel)}; a balanced training set keeps {a['per_class']} tiles per class, "
              f"{a['tiles_kept']} in all (of {a['tiles_available']} tile-labels in those "
              "classes)")
        print(sel.reset_index().to_string(index=False))


COMMANDS = (
    Command("build", "extract MFCC tiles of a catalog into a store", _build_arguments, _build,
            description="Build or update a catalog's tiles. Incremental: unchanged tracks are "
                        "skipped; rerun after an interruption to finish."),
    Command("tracks", "list tracks matching filters", _tracks_arguments, _tracks,
            description="Tracks with their metadata and build status. Filters on catalog "
                        "columns are pushed down to the Parquet scan."),
    Command("info", "summary of a store", _info_arguments, _info,
            description="Tracks, hours, tiles, failures, feature sets and size on disk."),
    Command("stats", "catalog statistics: membership, bigrams, years", _stats_arguments, _stats,
            description="Class membership by label (tracks, tiles, hours), label bigrams, "
                        "release year per label and labels per track, over the tracks matching "
                        "the filters."),
)
