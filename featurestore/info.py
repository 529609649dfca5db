"""A store's summary: catalogs, tracks, hours, tiles, failures, feature sets, size on disk."""

from __future__ import annotations

import pandas as pd

from featurestore import layout
from featurestore.errors import StoreLookupError
from featurestore.statuses import FAILURE_STATUSES, OK, PENDING
from featurestore.store import Store


def _size(store: Store, path: str) -> int:
    return int(store.fs.du(path)) if store.fs.exists(path) else 0


def store_info(store: Store, feature_set: str | None = None) -> dict:
    """Everything ``featurestore info`` prints, as plain data (JSON-ready). The tracks'
    statuses are those of ``feature_set`` (see :meth:`Store.feature_set`); where the store
    holds several and none is named or the default, those of the one built last
    (``statuses_of`` says which)."""
    store.check_layout()
    feature_sets, unreadable, states = [], [], {}
    for fset in store.feature_sets(unreadable):
        states[fset.hash] = state = fset.state()
        spec = fset.spec
        live = state.frame[state.frame["status"] == OK]
        feature_sets.append({
            "hash": fset.hash,
            "spec": {"kind": spec.kind, "sample_rate": spec.sample_rate, "n_fft": spec.n_fft,
                     "hop_length": spec.hop_length, "n_mels": spec.n_mels,
                     "n_mfcc": spec.n_mfcc, "tile_shape": list(spec.tile_shape)},
            "tiles": int(live["n_tiles"].sum()),
            "slots": fset.slots(),
            "commits": state.seq,
            "bytes": _size(store, layout.feature_set_dir(store.root, fset.hash)),
        })
    statuses_of = _statuses_of(store, feature_set, states)
    catalogs = []
    tracks = store.tracks(feature_set=statuses_of, include_removed=True,
                          columns=["status", "n_tiles", "duration_s"])
    for name in store.catalog_names():
        rows = tracks[tracks["catalog"] == name]
        ok = rows[rows["status"] == OK]
        failed = rows[rows["status"].isin(FAILURE_STATUSES)]
        catalogs.append({
            "name": name,
            "tracks": int((rows["status"] != "removed").sum()),
            "ok": len(ok),
            "pending": int((rows["status"] == PENDING).sum()),
            "failed": len(failed),
            "failures": {k: int(v) for k, v in failed["status"].value_counts().items()},
            "removed": int((rows["status"] == "removed").sum()),
            "hours": round(float(ok["duration_s"].sum()) / 3600.0, 4),
            "tiles": int(ok["n_tiles"].sum()),
        })
    return {
        "store": store.url,
        "layout_version": layout.LAYOUT_VERSION,
        "statuses_of": statuses_of,
        "catalogs": catalogs,
        "tracks": sum(c["tracks"] for c in catalogs),
        "hours": round(sum(c["hours"] for c in catalogs), 4),
        "tiles": sum(c["tiles"] for c in catalogs),
        "failed": sum(c["failed"] for c in catalogs),
        "feature_sets": feature_sets,
        "unreadable_feature_sets": [{"hash": h, "reason": r} for h, r in unreadable],
        "bytes": _size(store, store.root),
    }


def _statuses_of(store: Store, feature_set: str | None, states: dict) -> str | None:
    """The feature set whose statuses ``info`` counts (None: the store has none yet)."""
    if feature_set is None and not states:
        return None
    try:
        return store.feature_set(feature_set).hash  # the one readers pick
    except StoreLookupError:
        if feature_set is not None:
            raise
    # several, none the default: the one whose last commit is the newest (empty ones last)
    last = {h: s.frame["built_at"].max() for h, s in states.items()}
    return max(states, key=lambda h: (pd.Timestamp(0, tz="UTC") if pd.isna(last[h])
                                      else last[h], h))


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_info(info: dict) -> str:
    """The summary as text for a terminal."""
    lines = [f"store {info['store']} (layout {info['layout_version']}), "
             f"{_human(info['bytes'])} on disk",
             f"  {info['tracks']} tracks, {info['hours']:.2f} h built, {info['tiles']} tiles, "
             f"{info['failed']} failed"]
    for c in info["catalogs"]:
        failures = ", ".join(f"{k} {v}" for k, v in sorted(c["failures"].items()))
        lines.append(f"  catalog {c['name']}: {c['tracks']} tracks ({c['ok']} ok, "
                     f"{c['pending']} pending, {c['failed']} failed"
                     + (f": {failures}" if failures else "")
                     + f", {c['removed']} removed), {c['hours']:.2f} h, {c['tiles']} tiles")
    if len(info["feature_sets"]) > 1:
        lines.append(f"  (track statuses of feature set {info['statuses_of']}; "
                     "--feature-set for another)")
    for f in info["feature_sets"]:
        s = f["spec"]
        what = (f"{s['n_mfcc']} MFCC" if s["kind"] == "mfcc"
                else f"{s['n_mels']}-band log-mel")
        lines.append(f"  feature set {f['hash']}: {what} at {s['sample_rate']} Hz, "
                     f"n_fft {s['n_fft']}, hop {s['hop_length']}, tiles "
                     f"{s['tile_shape'][0]}x{s['tile_shape'][1]}; {f['tiles']} live tiles in "
                     f"{f['slots']} slots, {f['commits']} commits, {_human(f['bytes'])}")
    for f in info["unreadable_feature_sets"]:
        lines.append(f"  feature set {f['hash']}: not read: {f['reason']}")
    return "\n".join(lines)
