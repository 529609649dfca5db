"""The ``featurestore`` command: one entry point for every stage.

Exit codes: 0 success; 1 unexpected error; 2 bad command line; 3 invalid catalog (nothing
changed); 4 built, but some tracks failed (each recorded with its reason); 5 the store cannot
be used (busy, other layout version, unreadable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from featurestore.build import EXIT_CATALOG, EXIT_ERROR, EXIT_STORE, EXIT_USAGE, build
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
               "5 store unusable (busy, other layout)")
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
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_cluster_args(b)
    _add_spec_args(b)

    d = sub.add_parser("demo", help="generate the demo library and build its store",
                       description="The main job on the embedded default: generate the demo "
                                   "film-score library, build its store on a LocalCluster.")
    d.add_argument("--dir", default="demo-library", help="where to put it (default %(default)s)")
    d.add_argument("--tracks", type=int, default=48, help="number of cues (default %(default)s)")
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
                   progress=not args.no_progress)
    print(report.summary())
    return report.exit_code


def _cmd_demo(args: argparse.Namespace) -> int:
    from catalogs.demo import generate_demo_library
    import featurestore

    print(f"generating the demo library in {os.path.abspath(args.dir)} ...", file=sys.stderr)
    catalog = generate_demo_library(args.dir, n_tracks=args.tracks)
    store_url = os.path.join(args.dir, "store")
    report = build(catalog, store_url, name="demo", scheduler=args.scheduler,
                   scheduler_file=args.scheduler_file, n_workers=args.workers,
                   progress=not args.no_progress)
    print(report.summary())
    store = featurestore.open(store_url)
    tracks = store.tracks()
    print(f"\nstore: {store_url}")
    print(tracks[["track_id", "film", "year", "genres", "status", "n_tiles"]].head(8)
          .to_string(index=False))
    tiles = store.tiles()
    print(f"\n{tiles.sizes['tile']} tiles of {tiles.sizes['coefficient']} x "
          f"{tiles.sizes['frame']} (feature set {tiles.attrs['feature_set']})")
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    from catalogs.reader import CatalogError, UnknownGenreWarning

    parser = _parser()
    args = parser.parse_args(argv)
    warnings.simplefilter("always", UnknownGenreWarning)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    commands = {"build": _cmd_build, "demo": _cmd_demo}
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
    except Exception as exc:  # the last line of defence: say what happened, exit non-zero
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

