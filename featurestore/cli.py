"""The ``featurestore`` command: one entry point, each stage's commands its own.

The store's commands (``build``, ``tracks``, ``info``, ``stats``) live in
:mod:`featurestore.commands`; later stages add theirs through the ``featurestore.commands``
entry point group (each entry point names a :class:`Command`), so this package never imports
them. A command's options and its work import what they need only when that command runs:
``featurestore --help`` loads no data library. Exit codes:
:class:`featurestore.exit_codes.ExitCode`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points

from featurestore.exit_codes import ExitCode, describe, exit_code_for, storage_refusal

#: The entry point group through which packages add commands.
ENTRY_POINT_GROUP = "featurestore.commands"
#: Output formats of the commands that print tables.
TABLE_FORMATS = ("table", "csv", "json", "parquet")


@dataclass(frozen=True)
class Command:
    """One subcommand: its name and one-line ``help`` (listed by ``featurestore --help``),
    ``arguments`` (adds its options to its parser) and ``run`` (does the work, returns the exit
    code); both import what they need only when called."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


def commands() -> list[Command]:
    """The store's own commands and every registered one, by name."""
    from featurestore.commands import COMMANDS

    found = {c.name: c for c in COMMANDS}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        command = point.load()
        if not isinstance(command, Command) or command.name != point.name:
            raise TypeError(f"entry point {point.name} = {point.value} in group "
                            f"{ENTRY_POINT_GROUP} is not a Command named {point.name!r}")
        if point.name in found:
            raise TypeError(f"two commands are named {point.name!r} (entry point "
                            f"{point.value} and {found[point.name].run.__module__})")
        found[point.name] = command
    return [found[name] for name in sorted(found)]


# -- options the stages' commands share ------------------------------------------------


def at_least(kind: type, low: float, strict: bool = False) -> Callable[[str], float]:
    """An argparse type: a ``kind`` (``int`` or ``float``) of at least ``low`` (above it when
    ``strict``), so that ``--top -2`` is refused rather than read as "all but two"."""
    what = f"{'an integer' if kind is int else 'a number'} {'>' if strict else '>='} {low}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not (value > low if strict else value >= low):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


#: Counts: rows, tracks, workers, tiles per batch.
positive_int = at_least(int, 1)


def storage_options(pairs: list[str] | None) -> dict:
    """``key=value`` pairs; values are parsed as JSON when they can be (numbers, booleans,
    objects), else kept as strings. ``client_kwargs.endpoint_url=...`` nests."""
    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--storage-option {pair!r} is not key=value")
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


def add_store_args(p: argparse.ArgumentParser, audio: bool = False) -> None:
    """``--store`` and ``--storage-option`` (which also reach the audio, for ``audio``)."""
    p.add_argument("--store", required=True, help="store path or URL (file://, s3://, memory://)")
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE", default=[],
                   help=f"fsspec option for the store{' and audio' if audio else ''}, e.g. "
                        "client_kwargs.endpoint_url=http://127.0.0.1:9000 (repeatable)")


def open_store(args: argparse.Namespace):
    """The store the ``--store`` options name."""
    import featurestore

    return featurestore.open(args.store, storage_options(args.storage_option) or None)


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    """Where the Dask work runs: ``--scheduler``, ``--scheduler-file``, ``--workers``."""
    g = p.add_argument_group("cluster (default: a LocalCluster on this machine)")
    g.add_argument("--scheduler", metavar="ADDR",
                   help="address of a running Dask scheduler (or set DASK_SCHEDULER_ADDRESS)")
    g.add_argument("--scheduler-file", metavar="FILE", help="a Dask scheduler file")
    g.add_argument("--workers", type=positive_int, metavar="N",
                   help="LocalCluster worker processes (default: one per core)")


def add_filter_args(p: argparse.ArgumentParser, build_status: bool = True) -> None:
    """The track filters of :meth:`featurestore.Store.tracks`; read back by :func:`filters`.
    Without ``build_status``, no ``--status`` or ``--feature-set``: for commands that answer
    from one feature set's built tracks (a model's)."""
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
    g.add_argument("--where", metavar="EXPR",
                   help="free predicate, e.g. \"1960 <= year < 1970 and contains(composer, "
                        "'morricone') and n_tiles >= 3\"")
    if build_status:
        g.add_argument("--status", action="append", metavar="STATUS",
                       help="build status: ok, pending, or a failure kind")
        g.add_argument("--feature-set", metavar="HASH", help="whose build status to use (a "
                       "hash, or mfcc / logmel for the store's set of that kind)")


def filters(args: argparse.Namespace) -> dict:
    """The filter options as keyword arguments of :meth:`featurestore.Store.tracks` (those of
    build status only where the command has them)."""
    chosen = {"catalog": args.catalog, "film": args.film, "composer": args.composer,
              "year": args.year, "genres": args.genre, "all_genres": args.all_genres,
              "exclude_genres": args.exclude_genre, "labels": args.labels, "where": args.where}
    if hasattr(args, "status"):
        chosen.update(status=args.status, feature_set=args.feature_set)
    return chosen


# what an --output file's name says it holds
OUTPUT_EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json",
                     ".parquet": "parquet", ".pq": "parquet"}


def add_output_args(p: argparse.ArgumentParser) -> None:
    """``--format`` (one of :data:`TABLE_FORMATS`) and ``--output``, for :func:`write_frames`;
    :func:`main` settles the format with :func:`output_format`."""
    p.add_argument("--format", choices=TABLE_FORMATS,
                   help="table, csv, json (one object per line) or parquet (default: what "
                        "--output's extension names, else table)")
    p.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")


def output_format(fmt: str | None, output: str | None) -> str:
    """The format to write: ``fmt`` if given, else the one ``output``'s extension names
    (:data:`OUTPUT_EXTENSIONS`), else ``table``. A ``fmt`` that contradicts the extension is
    refused, so ``-o scores.parquet --format csv`` does not leave CSV text in a .parquet file."""
    named = OUTPUT_EXTENSIONS.get(os.path.splitext(output)[1].lower()) if output else None
    if fmt is None:
        return named or "table"
    if named is not None and named != fmt:
        raise ValueError(f"--format {fmt} contradicts --output {output}, whose name says "
                         f"{named}: drop --format, or give the file a name for {fmt}")
    return fmt


def flat_lists(frame):
    """List cells as ``a|b`` strings, the catalog convention, for CSV and tables."""
    import numpy as np

    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object and out[col].map(
                lambda v: isinstance(v, (list, np.ndarray))).any():
            out[col] = out[col].map(lambda v: "|".join(map(str, v))
                                    if isinstance(v, (list, np.ndarray)) else v)
    return out


def table_text(frame, header: bool = True) -> str:
    """``frame`` as a text table for people: list cells as ``a|b``, no index, numbers with
    four decimals (a score of 1.2e-07 reads 0.0000; csv, json and parquet keep every digit),
    and a column of whole numbers with gaps (integers that pandas read as floats because of
    the gaps) as integers: 3, not 3.0000."""
    out = flat_lists(frame)
    for col in out.columns:
        values = out[col]
        present = values.dropna() if values.dtype.kind == "f" else None
        if (present is not None and len(present) and values.isna().any()
                and (present % 1 == 0).all() and (present.abs() < 2**53).all()):
            out[col] = values.astype("Int64")
    return out.to_string(index=False, header=header, float_format=lambda v: f"{v:.4f}")


@contextlib.contextmanager
def option_file(option: str, path: str | None):
    """Errors reading or writing the file or folder an option names are that option's (exit
    code 2, naming it), not the store's refusal."""
    try:
        yield
    except OSError as exc:
        if path is None:
            raise
        raise ValueError(f"{option} {path}: {exc.strerror or exc}") from None


def write_frames(frames: Iterable, fmt: str, output: str | None) -> int:
    """Write frames (an iterable, one after another) as one table; returns the rows written.
    Errors writing ``output`` are ``--output``'s; those reading the frames (a lazy frame
    reads the store as it goes) stay the store's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    binary = fmt == "parquet"
    with option_file("--output", output):
        sink = (open(output, "wb" if binary else "w", newline="" if not binary else None)
                if output else sys.stdout.buffer if binary else sys.stdout)
    rows, writer = 0, None
    try:
        for n, frame in enumerate(frames):
            rows += len(frame)
            with option_file("--output", output):
                if fmt == "table":
                    if len(frame):
                        sink.write(table_text(frame, header=n == 0) + "\n")
                    elif n == 0:  # the header alone, not pandas' "Empty DataFrame" note
                        sink.write(" ".join(map(str, frame.columns)) + "\n")
                elif fmt == "csv":
                    flat_lists(frame).to_csv(sink, index=False, header=n == 0)
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
        with option_file("--output", output):
            if writer is not None:
                writer.close()
            if output:
                sink.close()
    return rows


# -- the command line ------------------------------------------------------------------


def parser(available: list[Command], chosen: str | None = None) -> argparse.ArgumentParser:
    """The parser listing every command; only ``chosen``'s options are added (and imported)."""
    from featurestore import __version__

    top = argparse.ArgumentParser(prog="featurestore",
                                  description="A dataset-and-feature store for music audio.",
                                  epilog=describe())
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    for command in available:
        p = sub.add_parser(command.name, help=command.help,
                           description=command.description or command.help)
        if command.name == chosen:
            command.arguments(p)
            p.set_defaults(run=command.run)
    return top


def _chosen(argv: list[str], available: list[Command]) -> str | None:
    """The command named on the line: the first word that is not an option (the top level
    takes no option with a value)."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in {c.name for c in available} else None


#: Options after which a rerun of the interrupted command starts over, and what it redoes.
_STARTS_OVER = {"rebuild": ("extracts", "tiles"), "rescore": ("scores", "scores")}


def _explain(exc: BaseException, code: ExitCode, args: argparse.Namespace) -> str:
    """The message for a command (parsed as ``args``) that failed with ``exc``."""
    store = getattr(args, "store", None)
    refusal = storage_refusal(exc)
    if code == ExitCode.INTERRUPTED:
        kept = ("interrupted: what was committed is kept (built tracks, scored batches, a "
                "model's last checkpoint)")
        redo = next((name for name in _STARTS_OVER if getattr(args, name, False)), None)
        if redo:
            verb, what = _STARTS_OVER[redo]
            return (f"{kept}; run again with --{redo}, it {verb} every track again, those "
                    f"this run reached too; without it, the tracks this run did not reach "
                    f"keep their earlier {what}")
        return f"{kept}; run the same command again to go on from there"
    if code == ExitCode.CATALOG:
        return f"error: invalid catalog: {exc}"
    if code == ExitCode.STORE and refusal is not None:
        return (f"error: store{f' {store!r}' if store else ''} cannot be used: {refusal}. "
                "What previous runs committed is intact; fix this and run the same command "
                "again.")
    if code in (ExitCode.STORE, ExitCode.USAGE):
        return f"error: {exc}"
    return f"error: {type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    available = commands()
    args = parser(available, _chosen(argv, available)).parse_args(argv)
    from catalogs.reader import UnknownGenreWarning
    from featurestore.errors import UnheldLabelWarning

    with warnings.catch_warnings():  # the command's own way of saying them, undone after
        for said in (UnknownGenreWarning, UnheldLabelWarning):
            warnings.simplefilter("always", said)
        warnings.showwarning = _say_warning
        try:
            if hasattr(args, "output"):  # the commands that write tables
                args.format = output_format(args.format, args.output)
            return int(args.run(args))
        except BrokenPipeError:
            # The reader stopped reading (`featurestore tracks ... | head`): nothing to
            # explain. stdout goes to devnull so that the interpreter's flush at exit does not
            # fail again; the status is Python's own for a broken pipe.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return int(ExitCode.ERROR)
        except (Exception, KeyboardInterrupt) as exc:  # the last line of defence
            code = exit_code_for(exc)
            print(_explain(exc, code, args), file=sys.stderr)
            return int(code)


def _say_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as the command line says it: its words, not the code that raised it."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)

if __name__ == "__main__":
    # Run as ``python -m featurestore.cli``, this file is ``__main__``: take ``main`` (and so
    # :class:`Command`) from ``featurestore.cli``, the module the stages' commands import.
    from featurestore.cli import main as cli_main

    sys.exit(cli_main())
