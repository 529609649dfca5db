"""Query speed with pushdown, and the memory of lazy against eager track frames (run by hand).

    python benchmarks/query_pushdown.py [--tracks 100000] [--out benchmarks/out/query-store]

Generates a catalog of film cues (metadata only: composer, film, year, genres, a free-text
notes column), writes it into a store with a build manifest (97% ok, 3% failed), then prints:

1. a filtered query (a composer's 1960s Westerns) through ``store.tracks(...)`` with pushdown,
   against the obvious alternatives in the same run: ``store.tracks()`` then filtering in
   pandas, and ``pandas.read_parquet`` of the table then filtering; with the row groups and
   bytes the pushdown read;
2. the peak memory of ``store.tracks()`` against ``store.tracks(lazy=True)`` aggregated
   partition by partition (each in a fresh process, peak RSS above the process's baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd

GENRES = ["Action", "Adventure", "Comedy", "Crime", "Drama", "Fantasy", "Musical", "Romance",
          "Sci-Fi", "Thriller", "Western", "War", "Horror", "Mystery"]
WORDS = ("strings brass low ostinato tense swell solo piano choir theme motif reprise "
         "percussion pulse quiet dark bright march waltz harmonica whistle").split()


def make_store(url: str, n: int) -> None:
    from featurestore.manifest import SCHEMA
    from featurestore.spec import FeatureSpec, TileEncoding
    from featurestore.store import Store

    rng = np.random.default_rng(0)
    n_films = max(n // 6, 1)
    composers = np.array([f"Composer {i:04d}" for i in range(max(n // 50, 1))], dtype=object)
    film_composer = composers[np.minimum(rng.zipf(1.3, n_films) - 1, len(composers) - 1)]
    film_composer[0] = "Ennio Morricone"
    film_year = rng.integers(1930, 2024, n_films)
    film_genres = [list(rng.choice(GENRES, rng.integers(1, 4), replace=False))
                   for _ in range(n_films)]
    for f in range(0, n_films, 97):  # a run of Morricone westerns across the decades
        film_composer[f], film_genres[f] = "Ennio Morricone", ["Western", "Drama"]
    film = rng.integers(0, n_films, n)
    frame = pd.DataFrame({
        "track_id": pd.array([f"t{i:07d}" for i in range(n)], dtype="string"),
        "path": pd.array([f"s3://library/audio/t{i:07d}.mp3" for i in range(n)],
                         dtype="string"),
        "title": pd.array([f"Cue {i}" for i in range(n)], dtype="string"),
        "film": pd.array([f"Film {f:06d}" for f in film], dtype="string"),
        "composer": pd.array(film_composer[film], dtype="string"),
        "year": pd.array(film_year[film], dtype="Int64"),
        "genres": [film_genres[f] for f in film],
        "notes": [" ".join(rng.choice(WORDS, 20)) for _ in range(n)],
    })
    store = Store(url)
    store.initialize()
    store.write_catalog("library", frame)
    fset = store.create_feature_set(FeatureSpec(), TileEncoding())
    tiles = rng.integers(1, 30, n)
    failed = rng.random(n) < 0.03
    manifest = pd.DataFrame({
        "catalog": "library", "track_id": frame["track_id"].astype(str),
        "path": frame["path"].astype(str), "fingerprint": "x", "content_hash": "h",
        "status": np.where(failed, "corrupt", "ok"), "error": np.where(failed, "bad frame", ""),
        "n_tiles": np.where(failed, 0, tiles), "tile_start": np.cumsum(tiles) - tiles,
        "duration_s": tiles * 9.29, "source_rate": 44100, "channels": 2,
        "built_at": pd.Timestamp.now(tz="UTC"), "run_id": "bench", "seq": 1})
    fset.manifest.append(manifest[SCHEMA.names], seq=1, high_water=int(tiles.sum()))


QUERY = dict(composer="Ennio Morricone", year="1960:1969", genres="Western")


def best_of(fn, repeat: int = 5) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def speed(url: str) -> None:
    import featurestore
    from featurestore import layout

    store = featurestore.open(url)
    table_path = layout.catalog_table(store.root, "library")

    def full_then_filter():
        t = store.tracks()
        years = t["year"].between(1960, 1969)
        return t[(t["composer"] == "Ennio Morricone") & years
                 & t["genres"].map(lambda g: "Western" in g)]

    def pandas_read_then_filter():
        t = pd.read_parquet(table_path)
        return t[(t["composer"] == "Ennio Morricone") & t["year"].between(1960, 1969)
                 & t["genres"].map(lambda g: "Western" in g)]

    pushed_s, pushed = best_of(lambda: store.tracks(**QUERY))
    full_s, full = best_of(full_then_filter)
    pandas_s, plain = best_of(pandas_read_then_filter)
    assert set(pushed["track_id"]) == set(full["track_id"]) == set(plain["track_id"])
    plan = store.explain(**QUERY)
    print(f"query {QUERY}: {len(pushed)} tracks of {len(store.tracks(columns=['year']))}")
    print(f"  pushdown           {pushed_s * 1000:8.1f} ms  (row groups {plan.row_groups_read}"
          f"/{plan.row_groups_total}, {plan.bytes_read / 2**20:.2f} of "
          f"{plan.bytes_total / 2**20:.2f} MiB compressed)")
    print(f"  tracks() + filter  {full_s * 1000:8.1f} ms  -> pushdown is "
          f"{full_s / pushed_s:.1f}x faster")
    print(f"  read_parquet + filter (no status join) {pandas_s * 1000:8.1f} ms  -> "
          f"{pandas_s / pushed_s:.1f}x")
    narrow_s, _ = best_of(lambda: store.tracks(columns=["composer", "year"]))
    print(f"  tracks(columns=[composer, year]) {narrow_s * 1000:8.1f} ms (projection only)")


_MEASURE = r"""
import json, sys
sys.path.insert(0, sys.argv[3])
import featurestore, dask
from measuring import PeakRss
store = featurestore.open(sys.argv[1])
import dask.dataframe  # both modes start with the same modules loaded
# first-call costs (imports, caches) of both paths, on one row group
store.tracks(status="none", year=1965)
store.tracks(lazy=True, status="none").get_partition(0).compute(scheduler="sync")
with PeakRss() as peak:
    if sys.argv[2] == "eager":
        t = store.tracks()
        total = int(t["n_tiles"].sum())
    else:
        t = store.tracks(lazy=True)
        total = int(t["n_tiles"].sum().compute(scheduler="sync"))
print(json.dumps({"total": total, "peak_above_base": peak.above_base,
                  "partitions": getattr(t, "npartitions", 1)}))
"""


def memory(url: str) -> None:
    out = {}
    for mode in ("eager", "lazy"):
        res = subprocess.run([sys.executable, "-c", _MEASURE, url, mode,
                              os.path.dirname(os.path.abspath(__file__))],
                             capture_output=True, text=True, check=True)
        out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["eager"]["total"] == out["lazy"]["total"]
    e, z = out["eager"]["peak_above_base"], out["lazy"]["peak_above_base"]
    print(f"memory, sum of n_tiles over every track ({out['eager']['total']} tiles):")
    print(f"  tracks()            peak +{e / 2**20:7.1f} MiB")
    print(f"  tracks(lazy=True)   peak +{z / 2**20:7.1f} MiB over "
          f"{out['lazy']['partitions']} partitions -> {e / max(z, 1):.1f}x less")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--out", default=os.path.join("benchmarks", "out", "query-store"))
    args = parser.parse_args()
    url = os.path.abspath(f"{args.out}-{args.tracks}")
    if not os.path.exists(os.path.join(url, "featurestore.json")):
        start = time.perf_counter()
        make_store(url, args.tracks)
        print(f"generated {args.tracks} tracks in {time.perf_counter() - start:.1f} s: {url}")
    speed(url)
    memory(url)


if __name__ == "__main__":
    main()
