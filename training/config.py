"""The training configuration: every choice a run makes, saved with the model."""

from __future__ import annotations

import numbers
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields, replace

#: ``auto`` selects among :data:`CANDIDATES` by cross-validation on the training side.
ARCHITECTURES = ("auto", "linear", "kernel", "pooled", "dnn", "cnn", "ensemble", "multilabel")
#: The candidates ``auto`` compares unless ``candidates`` names others.
CANDIDATES = ("linear", "kernel", "pooled")
#: Architectures that score a whole track from all its tiles (trained on track targets).
TRACK_LEVEL = ("linear", "kernel", "pooled")
BALANCING = ("equal", "weights", "oversample", "none")
OPTIMIZERS = ("sgd", "adam", "adamw")
#: Learning-rate schedules: linear decay to zero over the epochs (the study's), or none.
LR_DECAYS = ("linear", "constant")

# Settings left unset (None) take the architecture's default: the study's for its models
# (SGD at 0.01 with linear decay, batches of 128 tiles, up to 200 epochs, patience 20), and for
# the track-level CNN those measured best on real recordings (docs/training.md).
_STUDY = {"optimizer": "sgd", "learning_rate": 0.01, "epochs": 200, "patience": 20,
          "batch_size": 128, "weight_decay": 0.0}
ARCH_DEFAULTS = {
    "dnn": _STUDY, "cnn": _STUDY, "ensemble": _STUDY, "multilabel": _STUDY,
    "pooled": {"optimizer": "adamw", "learning_rate": 3e-3, "epochs": 60, "patience": 15,
               "weight_decay": 1e-2},  # its batches are tracks: tracks_per_batch
}
#: The statistics models, fitted by scikit-learn at once (no epochs): none of these settings
#: (:data:`LOOP_SETTINGS`) apply to them.
STATISTICS_MODELS = ("linear", "kernel")
LOOP_SETTINGS = tuple(_STUDY)
ARCH_DEFAULTS.update({arch: {} for arch in STATISTICS_MODELS})
_NETWORKS = ("pooled", "dnn", "cnn", "ensemble", "multilabel")
_TILE_MODELS = ("dnn", "cnn", "ensemble", "multilabel")
#: Settings that only some architectures use, and which (every other setting applies to all).
USED_BY = {
    **dict.fromkeys((*(k for k in LOOP_SETTINGS if k != "batch_size"), "momentum", "lr_decay",
                     "mixed_precision", "balance", "checkpoint_seconds"), _NETWORKS),
    **dict.fromkeys(("batch_size", "dense_units", "dropout", "loader_workers", "buffer_chunks"),
                    _TILE_MODELS),
    **dict.fromkeys(("crop_tiles", "tracks_per_batch", "spec_augment", "mixup", "width"),
                    ("pooled",)),
    **dict.fromkeys(("tile_dtype", "compile"), ("ensemble",)),
    **dict.fromkeys(("folds", "candidates"), ("auto",)),
}
#: Tiles per step of the study's models on a GPU when ``batch_size`` is unset: steps of 128
#: leave the GPU waiting on kernel launches (benchmarks/gpu_training.py). The default learning
#: rate grows with the square root of the batch (docs/training.md measures both).
GPU_BATCH = 1024
#: How tiles kept on the training device are stored: ``bfloat16`` halves their memory.
TILE_DTYPES = ("float32", "bfloat16")


def _at_least(n: int) -> tuple:
    """A bound of :data:`_BOUNDS`: the test and the words that name it."""
    return (lambda v: v >= n, f"must be at least {n}")


_NOT_NEGATIVE = (lambda v: v >= 0, "must not be negative")
_FRACTION = (lambda v: 0 <= v < 1, "must be in [0, 1)")


#: Ranges of numeric settings, refused outside them (a saved config's value outside them
#: reads as unset: see :meth:`TrainConfig.from_dict`).
_BOUNDS = {
    "test_size": _FRACTION,
    "val_size": (lambda v: 0 < v < 1, "must be in (0, 1)"),
    "epochs": _at_least(1),
    "patience": _at_least(1),
    "batch_size": _at_least(1),
    "crop_tiles": _at_least(1),
    "tracks_per_batch": _at_least(1),
    "width": _at_least(4),
    "memory_budget_mb": _NOT_NEGATIVE,
    "folds": _at_least(2),
    "min_tracks": _NOT_NEGATIVE,
    "dense_units": _at_least(1),
    "buffer_chunks": _at_least(1),
    "loader_workers": _NOT_NEGATIVE,
    "learning_rate": (lambda v: v > 0, "must be positive"),
    "momentum": _FRACTION,
    "weight_decay": _NOT_NEGATIVE,
    "mixup": _NOT_NEGATIVE,
    "checkpoint_seconds": _NOT_NEGATIVE,
    # numpy's seeds: a larger one would fail only once training has begun
    "seed": (lambda v: 0 <= v < 2 ** 32, "must be in [0, 2**32)"),
}


def _boolean(value) -> bool:
    # numpy's booleans without importing numpy: `featurestore --help` reads this module
    return isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"


def _integral(value) -> bool:
    return isinstance(value, numbers.Integral) and not _boolean(value)


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not _boolean(value)


_KINDS = {
    "int": (_integral, "must be a whole number", int),
    "float": (_real, "must be a number", float),
    "bool": (_boolean, "must be True or False", bool),
    "str": (lambda v: isinstance(v, str), "must be a string", str),
    "tuple[str, ...]": (lambda v: isinstance(v, str), "must be strings", str),
    "tuple[float, ...]": (_real, "must be numbers", float),
}
_WRONG = object()


def setting_name(name: str) -> str:
    """A setting as errors name it: the field, and the ``train`` option that sets it."""
    return f"{name} (--{name.replace('_', '-')})"


def _kind_of(f) -> tuple | None:
    """Field ``f``'s entry of :data:`_KINDS` (its annotation, optional or not)."""
    return _KINDS.get(f.type.removesuffix(" | None"))


def _number_of(f, value):
    """``value`` as field ``f``'s number where it is one written as text, else as it is."""
    kind = _kind_of(f)
    if isinstance(value, str) and kind in (_KINDS["int"], _KINDS["float"]):
        try:
            return kind[2](value)
        except ValueError:
            return value
    return value


def _as_declared(f, value):
    """``value`` as field ``f`` keeps it (plain Python values, a tuple for a sequence), or
    :data:`_WRONG` where it is not of the field's kind."""
    kind = _kind_of(f)
    if kind is None or (value is None and f.type.endswith("| None")):
        return value
    fits, _, plain = kind
    if not f.type.startswith("tuple"):
        return plain(value) if fits(value) else _WRONG
    if isinstance(value, (tuple, list)) and all(fits(v) for v in value):
        return tuple(plain(v) for v in value)
    return _WRONG


class TrainingError(ValueError):
    """A training request that cannot be honoured (bad option, mismatched store, no data)."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    ``arch``: ``auto`` (default: cross-validates ``candidates`` on the training side and
    trains the best), ``linear`` (logistic regression on per-track feature statistics),
    ``kernel`` (RBF support vector machines on the same statistics),
    ``pooled`` (a CNN over every tile of a track, pooled, trained on track targets), or the
    study's ``dnn``, ``cnn``, ``ensemble`` of one-vs-rest CNNs, ``multilabel`` CNN.

    ``labels``: explicit classes, else every label with at least ``min_tracks`` tracks, from the
    ``label_column``. Splits are by track (or by ``group_by``, e.g. ``film``), seeded.
    ``balance`` (tile models): ``equal`` tiles per class each epoch (the study's scheme; for the
    ensemble, all positives and a fresh equal-sized uniform sample of negatives per member and
    epoch), ``weights`` (class-weighted loss over all tiles), ``oversample`` (every class drawn
    up to the largest), ``none``; track-level models see every track once an epoch and honour
    ``weights`` only.

    ``optimizer``, ``learning_rate``, ``epochs``, ``patience``, ``batch_size`` and
    ``weight_decay`` left as None take the architecture's defaults (:data:`ARCH_DEFAULTS`).
    ``pooled`` trains on ``tracks_per_batch`` tracks a step, each a random crop of
    ``crop_tiles`` tiles' worth of frames, with SpecAugment masking (``spec_augment``) and
    mixup (``mixup``: the Beta parameter, 0 for none); ``width`` sets its channels.
    ``folds``: the cross-validation folds of ``auto``. ``checkpoint_seconds``: how often a
    run saves its state for resuming (and once at the end).

    On a GPU, the study's models take batches of :data:`GPU_BATCH` tiles unless
    ``batch_size`` is set (the default learning rate scaled by the square root of the batch).
    ``memory_budget_mb`` (default: a quarter of the available host memory, on CUDA also at
    most half the GPU's free memory): the tiles a run needs are read once and kept in memory, the
    ensemble's on the device as one tensor (``tile_dtype``), when they fit.
    ``compile``: ``torch.compile`` the fused ensemble's grouped pass (CUDA).
    """

    arch: str = "auto"
    labels: tuple[str, ...] = ()
    min_tracks: int = 20
    label_column: str = "genres"
    test_size: float = 0.1
    val_size: float = 0.2
    group_by: str | None = None
    seed: int = 0
    balance: str = "equal"
    epochs: int | None = None
    patience: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    lr_decay: str = "linear"
    dense_units: int = 50
    dropout: tuple[float, ...] = ()
    crop_tiles: int = 8
    tracks_per_batch: int = 16
    spec_augment: bool = True
    mixup: float = 0.2
    width: int = 32
    folds: int = 3
    candidates: tuple[str, ...] = ()
    device: str = "auto"
    mixed_precision: bool = True
    loader_workers: int = 0
    memory_budget_mb: float | None = None
    tile_dtype: str = "float32"
    compile: bool = False
    buffer_chunks: int = 8
    checkpoint_seconds: float = 30.0
    feature_set: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("labels", "candidates"):  # one name given alone, not its letters
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, (getattr(self, name),))
        wrong = []
        for f in fields(self):
            value = _as_declared(f, getattr(self, f.name))
            if value is _WRONG:
                wrong.append(f"{setting_name(f.name)} {getattr(self, f.name)!r}: "
                             f"{_kind_of(f)[1]}")
            else:
                object.__setattr__(self, f.name, value)
        if wrong:
            raise TrainingError("; ".join(wrong))
        unset = {f.name for f in fields(self) if f.default is None}  # may take a default
        for name, choices in FIELD_CHOICES.items():
            value = getattr(self, name)
            if value not in choices and not (value is None and name in unset):
                raise TrainingError(f"{setting_name(name)} {value!r}: choose one of "
                                    f"{', '.join(choices)}")
        out = [f"{setting_name(name)} {rule}" for name, (fits, rule) in _BOUNDS.items()
               if getattr(self, name) is not None and not fits(getattr(self, name))]
        if out:
            raise TrainingError("; ".join(out))
        if any(not 0 <= p < 1 for p in self.dropout):
            # a rate of 1 would drop every value: the layer would pass nothing on
            raise TrainingError(f"{setting_name('dropout')} rates must be in [0, 1): got "
                                f"{', '.join(map(str, self.dropout))}")
        unknown = [c for c in self.candidates if c not in ARCHITECTURES or c == "auto"]
        if unknown:
            raise TrainingError(f"{setting_name('candidates')} {', '.join(unknown)}: choose "
                                f"among {', '.join(a for a in ARCHITECTURES if a != 'auto')}")

    def resolved(self, arch: str | None = None) -> TrainConfig:
        """This config for ``arch`` (default its own), every unset setting filled with that
        architecture's default."""
        arch = arch or self.arch
        if arch == "auto":
            return replace(self, candidates=self.candidates or CANDIDATES)
        # An `auto` run's settings for its other candidates are back at their defaults: the
        # model that won did not use them, and its saved config must not say it did.
        unused = {f.name: f.default for f in fields(self)
                  if arch not in USED_BY.get(f.name, (arch,))}
        if arch in STATISTICS_MODELS:
            return replace(self, arch=arch, **unused)
        fill = {k: v for k, v in ARCH_DEFAULTS[arch].items() if getattr(self, k) is None}
        if ARCH_DEFAULTS[arch] is _STUDY and self.batch_size is None and self.on_gpu:
            fill["batch_size"] = GPU_BATCH
            if self.learning_rate is None:
                fill["learning_rate"] = _STUDY["learning_rate"] * (
                    GPU_BATCH / _STUDY["batch_size"]) ** 0.5
        return replace(self, arch=arch, **{**unused, **fill})

    def given(self, named: Collection[str] | None = None) -> set[str]:
        """The settings the request gives: ``named`` where the caller knows them (the command
        line knows an option given at its default value), else those that differ from their
        default."""
        if named is not None:
            return set(named)
        return {f.name for f in fields(self) if getattr(self, f.name) != f.default}

    def unused_settings(self, named: Collection[str] | None = None) -> list[str]:
        """The settings given (:meth:`given`) that ``arch`` does not use (for ``auto``: that
        none of its candidates uses), in field order."""
        archs = self.architectures | ({"auto"} if self.arch == "auto" else set())
        given = self.given(named)
        return [f.name for f in fields(self) if f.name in USED_BY and f.name in given
                and not archs & set(USED_BY[f.name])]

    def ignored_values(self, named: Collection[str] | None = None) -> list[str]:
        """Why settings given (:meth:`given`) would change nothing for this request, though
        its architectures use them in other cases (see :meth:`unused_settings` for those they
        never use)."""
        archs, given = self.architectures, self.given(named)
        out = []
        optimizers = {self.optimizer or ARCH_DEFAULTS[a].get("optimizer")
                      for a in archs & set(USED_BY["momentum"])}
        if optimizers and "momentum" in given and "sgd" not in optimizers:
            out.append(f"{setting_name('momentum')} is the sgd optimizer's, and "
                       f"{', '.join(sorted(optimizers))} is used here: leave it out or give "
                       "--optimizer sgd")
        if self.balance == "oversample" and not archs & set(_TILE_MODELS):
            out.append(f"{setting_name('balance')} oversample draws tiles, and pooled's "
                       "batches are tracks, every one once an epoch: give weights or leave it "
                       "out")
        if self.labels and "min_tracks" in given:
            out.append(f"{setting_name('min_tracks')} picks the classes when --labels does "
                       "not name them: leave one of them out")
        return out

    def refusal(self, named: Collection[str] | None = None) -> str | None:
        """Why this request is refused before anything is read: settings given
        (:meth:`given`) that it would ignore (:meth:`unused_settings`,
        :meth:`ignored_values`); ``None`` when there are none."""
        unused = self.unused_settings(named)
        if unused:
            what = (f"auto's candidates ({', '.join(self.candidates or CANDIDATES)})"
                    if self.arch == "auto" else repr(self.arch))
            groups: dict[tuple, list[str]] = {}
            for name in unused:
                groups.setdefault(USED_BY[name], []).append(name)
            uses = "; ".join(f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} used "
                             f"only by {', '.join(archs)}" for archs, names in groups.items())
            one = len(unused) == 1
            return (f"{', '.join(map(setting_name, unused))} do{'es' * one} not apply to "
                    f"{what}: {uses}; leave {'it' if one else 'them'} out")
        return "; ".join(self.ignored_values(named)) or None

    @property
    def architectures(self) -> set[str]:
        """The architectures this request may train: ``auto``'s candidates, else its own."""
        return set(self.candidates or CANDIDATES) if self.arch == "auto" else {self.arch}

    @property
    def on_gpu(self) -> bool:
        """Whether ``device`` is (or ``auto`` finds) a CUDA device."""
        from training.inference import parse_device  # torch only when asked

        # the form only: a stored model's config resolves on a machine without its GPU
        return parse_device(self.device).type == "cuda"

    @property
    def track_level(self) -> bool:
        return self.arch in TRACK_LEVEL

    def to_dict(self) -> dict:
        out = asdict(self)
        for name in ("labels", "dropout", "candidates"):
            out[name] = list(getattr(self, name))
        return out

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """The settings a model was saved with. Reading them back never fails on what a later
        version changed, so that stored models keep scoring: a setting it no longer has is
        left out, and a choice it no longer offers (an optimizer, say) reads as unset; neither
        shapes a trained model's forward pass. A number outside today's range (``_BOUNDS``), or
        a value not of the field's kind, reads as unset too; a number saved as text (a numpy
        scalar, which earlier versions saved with ``str``) reads as the number."""
        known = {f.name: f for f in fields(cls)}
        data = {k: _number_of(known[k], v) for k, v in data.items() if k in known}
        data = {k: v for k, v in data.items() if _as_declared(known[k], v) is not _WRONG
                and not (k in _BOUNDS and v is not None and not _BOUNDS[k][0](v))}
        for name, choices in FIELD_CHOICES.items():
            # a retired architecture stays an error: no model of it can be built
            if name != "arch" and data.get(name) not in (None, *choices):
                data.pop(name)  # the field's default
        for name in ("labels", "dropout", "candidates"):
            data[name] = tuple(data.get(name, ()))
        return cls(**data)


#: The values a field takes, where it takes one of a few (``featurestore train`` offers these).
FIELD_CHOICES = {"arch": ARCHITECTURES, "balance": BALANCING, "optimizer": OPTIMIZERS,
                 "lr_decay": LR_DECAYS, "tile_dtype": TILE_DTYPES}

#: What each field means, as ``featurestore train --help`` says it (the option of field
#: ``min_tracks`` is ``--min-tracks``; its default is the field's).
FIELD_HELP = {
    "arch": "the model: auto (cross-validates the candidates on the training side and trains "
            "the best), linear or kernel (logistic regression or RBF SVMs on per-track feature "
            "statistics), pooled (a CNN over every tile of a track), the study's dnn or cnn "
            "(softmax), an ensemble of one-vs-rest CNNs, or a multi-label CNN",
    "labels": "classes (default: every label with at least --min-tracks tracks)",
    "min_tracks": "a label needs this many tracks to be a class",
    "label_column": "catalog column holding the labels",
    "test_size": "share of the tiles held out for the test, whole tracks (or groups) at a "
                 "time",
    "val_size": "share of the other tiles for validation and early stopping, whole tracks "
                "(or groups) at a time",
    "group_by": "split whole groups, e.g. film: no film on two sides",
    "seed": "seed of the split, the samplers and the initial weights",
    "balance": "equal tiles per class each epoch, class-weighted loss, oversampling to the "
               "largest class, or none",
    "epochs": "at most this many epochs (per ensemble member; default: the architecture's)",
    "patience": "stop after this many epochs without a better validation score (default: the "
                "architecture's)",
    "batch_size": "tiles per training step of the tile models (default 128; on a GPU "
                  f"{GPU_BATCH}, the learning rate scaled by the square root)",
    "optimizer": "sgd (with --momentum), adam or adamw (default: the architecture's)",
    "learning_rate": "initial learning rate (default: the architecture's)",
    "weight_decay": "weight decay (default: the architecture's)",
    "crop_tiles": "pooled: tiles' worth of frames in each track's random crop",
    "tracks_per_batch": "pooled: tracks per training step",
    "spec_augment": "pooled: mask random bands and spans of each tile (SpecAugment)",
    "mixup": "pooled: mixup's Beta parameter (0: no mixup)",
    "width": "pooled: channels of its last convolutions",
    "folds": "auto: cross-validation folds on the training side",
    "candidates": "auto: the architectures it compares (default linear, kernel, pooled)",
    "checkpoint_seconds": "write a checkpoint at most this often (and at the end)",
    "momentum": "SGD momentum",
    "lr_decay": "learning-rate schedule: linear (to zero over the epochs) or constant",
    "dense_units": "units of the dense layer",
    "dropout": "dropout rates of the model's layers (default: the model's own)",
    "device": "auto (CUDA when present), cpu, cuda:0",
    "mixed_precision": "bfloat16 autocast on CUDA",
    "loader_workers": "DataLoader worker processes reading tiles",
    "memory_budget_mb": "keep the run's tiles in memory (the ensemble's on the GPU) when they "
                        "fit (default: a quarter of the host's available memory, on CUDA "
                        "also at most half the GPU's free memory)",
    "tile_dtype": "how tiles kept on the training device are stored (bfloat16: half the "
                  "memory)",
    "compile": "torch.compile the fused ensemble's steps (CUDA)",
    "buffer_chunks": "chunks mixed in the shuffle buffer when tiles are read from the store",
    "feature_set": "the feature set's hash, or a kind (mfcc, logmel) naming the store's set of "
                   "that kind (default: the store's only one, or the default spec's)",
    "extra": "free-form settings kept with the model (Python only)",
}
