"""The ``featurestore train`` command. Its training options are :class:`TrainConfig`'s fields,
with their types, defaults, choices and help as :mod:`training.config` defines them."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from featurestore.cli import Command, add_output_args, add_store_args, open_store, write_frames
from training.config import ARCHITECTURES, FIELD_CHOICES, FIELD_HELP, TrainConfig


def _items(kind: type):
    """Parses ``a,b,c`` into a tuple of ``kind`` (empty items dropped)."""
    def parse(text: str) -> tuple:
        items = tuple(kind(x.strip()) for x in text.split(",") if x.strip())
        if not items:  # an empty list would silently mean the default (every label)
            raise argparse.ArgumentTypeError(f"{text!r} names nothing")
        return items
    parse.__name__ = f"comma-separated {kind.__name__}"  # named in argparse's errors
    return parse


def config_options(parser: argparse.ArgumentParser) -> None:
    """One option per :class:`TrainConfig` field (``--min-tracks`` for ``min_tracks``);
    fields of no command-line type (``extra``) are left to Python callers. An option not
    given leaves no attribute (:func:`config_from` takes the field's default), so the options
    given at their default value are known too (:func:`given_settings`)."""
    group = parser.add_argument_group("training (TrainConfig's fields; unset ones take the "
                                      "architecture's defaults)")
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        kind = hints[field.name]
        if isinstance(kind, types.UnionType):  # X | None: an optional X
            kind = next(k for k in typing.get_args(kind) if k is not type(None))
        flag = "--" + field.name.replace("_", "-")
        help_text = FIELD_HELP.get(field.name, "")
        unset = {"default": argparse.SUPPRESS}
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text,
                               **unset)
        elif typing.get_origin(kind) is tuple:
            group.add_argument(flag, type=_items(typing.get_args(kind)[0]), metavar="A,B,...",
                               help=help_text, **unset)
        elif kind in (str, int, float):
            if field.default not in (None, ""):
                help_text += f" (default {field.default})"
            group.add_argument(flag, type=kind, help=help_text.strip(),
                               choices=FIELD_CHOICES.get(field.name),
                               metavar={int: "N", float: "X"}.get(kind), **unset)


def given_settings(args: argparse.Namespace) -> set[str]:
    """The :class:`TrainConfig` fields whose options were given, at any value."""
    return {f.name for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}


def config_from(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of the parsed options."""
    return TrainConfig(**{name: getattr(args, name) for name in given_settings(args)})


def _arguments(p: argparse.ArgumentParser) -> None:
    add_store_args(p)
    p.add_argument("--name", required=True, help="model name in the store")
    p.add_argument("--overwrite", action="store_true", help="replace a model of that name")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    config_options(p)


def _run(args: argparse.Namespace) -> int:
    from training.config import TrainingError
    from training.train import train

    config = config_from(args)
    # an option given at its default value that the model ignores is refused too
    refused = config.refusal(given_settings(args))
    if refused:
        raise TrainingError(refused)
    report = train(open_store(args), args.name, config, overwrite=args.overwrite,
                   progress=not args.no_progress)
    print(report.summary())
    return 0


TRAIN = Command(
    "train", "train a tagger on the store's tiles", _arguments, _run,
    description=f"Train a model ({', '.join(ARCHITECTURES)}: see --arch) and save it into the "
                "store. Rerun the same command after an interruption to resume from the last "
                "checkpoint.")


def _models_arguments(p: argparse.ArgumentParser) -> None:
    add_store_args(p)
    add_output_args(p)


def _models(args: argparse.Namespace) -> int:
    from training.model_files import list_models

    frame = list_models(open_store(args))
    if args.format == "table":
        # the hash is wide: shown only where a kind has several sets (64 and 128 bands, say)
        if not (frame.groupby("kind")["feature_set"].nunique() > 1).any():
            frame = frame.drop(columns=["feature_set"])
        frame = frame.round(3)
    write_frames([frame], args.format, args.output)
    return 0


MODELS = Command(
    "models", "the store's models, settings and test metrics side by side", _models_arguments,
    _models,
    description="One row per model: architecture (and what auto compared), feature set, "
                "classes, test tracks, track LRAP and coverage error (with its bound), tile "
                "LRAP, the settings that differ between architectures, finished or not.")
