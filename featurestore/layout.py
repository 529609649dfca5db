"""Where everything lives inside a store. The README's "Store layout" section documents it.

::

    <store>/featurestore.json                      format name and layout version
    <store>/locks/writer.json                      the writer lock (one build at a time)
    <store>/catalogs/<catalog>/tracks.parquet      each catalog's metadata, one row per track
    <store>/features/<spec-hash>/spec.json         the feature spec and tile encoding
    <store>/features/<spec-hash>/tiles.zarr/       Zarr v3 group: mfcc, entry, offset, ...
    <store>/features/<spec-hash>/manifest/snapshot.parquet   build manifest as of the last run
    <store>/features/<spec-hash>/manifest/log/<seq>.parquet  commits since that snapshot
    <store>/features/<spec-hash>/stats/<seq>.npz   per-value count, sum and sum of squares
    <store>/models/<name>/                         trained models (config, weights, split, history)
    <store>/scores/<model>/<version>/              a model version's scores: scoring.score_tables
    <store>/locks/score-<model>.json               the lock of a scoring run of that model
"""

from __future__ import annotations

import re

from featurestore.urls import join

FORMAT_NAME = "featurestore"
LAYOUT_VERSION = 1

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(kind: str, name: str) -> str:
    """Catalog and model names become folder names: letters, digits, ``.``, ``_``, ``-``."""
    if not _NAME.match(name or ""):
        raise ValueError(f"{kind} name {name!r} must start with a letter or digit and hold only "
                         "letters, digits, '.', '_' and '-' (at most 128)")
    return name


def store_meta(root: str) -> str:
    return join(root, "featurestore.json")


def writer_lock(root: str) -> str:
    return join(root, "locks", "writer.json")


def catalogs_dir(root: str) -> str:
    return join(root, "catalogs")


def catalog_table(root: str, catalog: str) -> str:
    return join(root, "catalogs", catalog, "tracks.parquet")


def features_dir(root: str) -> str:
    return join(root, "features")


def feature_set_dir(root: str, spec_hash: str) -> str:
    return join(root, "features", spec_hash)


def spec_file(root: str, spec_hash: str) -> str:
    return join(feature_set_dir(root, spec_hash), "spec.json")


def tiles_group(root: str, spec_hash: str) -> str:
    return join(feature_set_dir(root, spec_hash), "tiles.zarr")


def manifest_dir(root: str, spec_hash: str) -> str:
    return join(feature_set_dir(root, spec_hash), "manifest")


def stats_dir(root: str, spec_hash: str) -> str:
    return join(feature_set_dir(root, spec_hash), "stats")


def models_dir(root: str) -> str:
    return join(root, "models")


def model_dir(root: str, name: str) -> str:
    return join(root, "models", name)


def scores_dir(root: str, model: str) -> str:
    return join(root, "scores", model)


def score_version_dir(root: str, model: str, version: str) -> str:
    return join(root, "scores", model, version)


def score_lock(root: str, model: str) -> str:
    return join(root, "locks", f"score-{model}.json")
