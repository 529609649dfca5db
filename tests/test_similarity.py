"""Track embeddings and similarity search: exact cosine search returns known neighbours in
order, embeddings written by scoring equal the model's recomputed ones (``linear``, ``kernel``
and ``pooled``), ``similar`` honours its filters and takes a reference file, and evaluate's
neighbour figures are the ones counted by hand, in its summary, JSON and report."""

from __future__ import annotations

import dataclasses
import io
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

import featurestore
from scoring import embeddings, evaluate, score, similar
from scoring.embeddings import CODEBOOK, EMBEDDINGS
from scoring.report import markdown
from scoring.score_tables import KEY, score_table
from scoring.similarity import ExactIndex, neighbour_figures
from tests.helpers import cli_modules, codebook_by_hand, run_cli
from training import TrainConfig, train
from training.model_files import ModelFiles

MODEL = "sim-lin"


def test_exact_search_returns_known_neighbours_in_order():
    library = np.array([[1, 0, 0],      # 0
                        [0, 1, 0],      # 1
                        [1, 1, 0],      # 2: 45 degrees from 0
                        [10, 1, 0],     # 3: nearly 0, length does not count
                        [0, 0, 0],      # 4: zeros: similarity 0, never NaN
                        [-1, 0, 0],     # 5: opposite
                        [2, 0, 0]],     # 6: same direction as 0, ties with it
                       dtype=np.float32)
    for block_rows in (2, 3, 1000):  # across blocks as within one
        index = ExactIndex(library, block_rows=block_rows)
        sims, rows = index.search(np.array([1, 0, 0], np.float32), 7)
        assert rows[0].tolist() == [0, 6, 3, 2, 1, 4, 5]
        np.testing.assert_allclose(sims[0], [1, 1, 10 / np.sqrt(101), 1 / np.sqrt(2), 0, 0, -1],
                                   rtol=1e-6)
        allowed = np.ones(7, bool)
        allowed[[0, 6]] = False
        _, rows = index.search(np.array([[1, 0, 0], [0, 1, 0]], np.float32), 2, allowed)
        assert rows.tolist() == [[3, 2], [1, 2]]
        # fewer candidates than asked: filled with -1 / -inf
        sims, rows = index.search(np.array([0, 1, 0], np.float32), 4, np.eye(7, dtype=bool)[1])
        assert rows[0].tolist() == [1, -1, -1, -1] and np.isneginf(sims[0, 1:]).all()
    with pytest.raises(ValueError, match="2 values for a library of 3-value"):
        ExactIndex(library).search(np.ones(2, np.float32), 1)
    # random data: the order of a plain full sort
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(1000, 16)).astype(np.float32)
    query = rng.normal(size=16).astype(np.float32)
    _, rows = ExactIndex(vectors, block_rows=128).search(query, 25)
    cos = vectors @ query / np.linalg.norm(vectors, axis=1) / np.linalg.norm(query)
    assert rows[0].tolist() == np.argsort(-cos, kind="stable")[:25].tolist()


def test_neighbour_figures_count_same_film_and_label_overlap():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    films = pd.Series(["A", "A", "B", None])
    labels = pd.Series([["x"], ["x", "y"], ["y"], []])
    got = neighbour_figures(vectors, films, labels, np.array([0, 2, 3]), k=1)
    # 0 -> 1 (same film, Jaccard 1/2); 2 -> 3 (other film, no labels: 0); 3 has neither
    assert got == {"k": 1, "queries": 3, "library": 4, "same_film_precision": 0.5,
                   "label_jaccard": 0.25}


@pytest.fixture(scope="module")
def scored(demo_store, dask_client):
    """A linear model on the demo store, scored (it adds only its own model and scores)."""
    train(demo_store, MODEL, TrainConfig(arch="linear", min_tracks=6, test_size=0.25,
                                         device="cpu"), progress=False)
    report = score(demo_store, MODEL, client=dask_client, progress=False)
    return {"url": demo_store, "report": report}


def _statistics_by_hand(url: str, model) -> pd.DataFrame:
    """Every ok track's standardized feature statistics (mean, std and the model's quantiles of
    every row), in numpy, with the model's scaler."""
    store = featurestore.open(url)
    tracks = store.tracks(status="ok")
    tiles = store.tiles(tracks).compute()
    rows = []
    for key in tracks[KEY].itertuples(index=False):
        mask = (tiles["catalog"].values == key[0]) & (tiles["track_id"].values == key[1])
        frames = tiles.values[mask].transpose(1, 0, 2).reshape(tiles.shape[1], -1)
        frames = frames.astype(np.float64)
        stats = np.concatenate([frames.mean(1), frames.std(1), *np.percentile(
            frames, np.multiply(model.layout.quantiles, 100), axis=1)])
        rows.append((*key, (stats - model.center.numpy()) / model.scale.numpy()))
    return pd.DataFrame(rows, columns=[*KEY, "expected"])


def test_embeddings_are_written_once_and_equal_the_models(scored, dask_client):
    url = scored["url"]
    store = featurestore.open(url)
    files = ModelFiles(store, MODEL)
    table = score_table(store, MODEL)
    raw = pd.read_parquet(table.embeddings_path)  # plain Parquet, readable without our code
    assert len(raw) == scored["report"].scored == 48 and not raw.duplicated(KEY).any()
    assert set(raw["version"]) == {files.version()} and set(raw["run_id"]) == {
        scored["report"].run_id}
    assert table.info().embedding.startswith("standardized per-track feature statistics")
    got = embeddings(store, MODEL).merge(_statistics_by_hand(url, files.load_model()), on=KEY)
    assert len(got) == 48
    np.testing.assert_allclose(np.stack(got["embedding"]), np.stack(got["expected"]),
                               rtol=1e-4, atol=1e-4)
    # a second run has nothing to do: the file is not written again
    before = os.stat(table.embeddings_path).st_mtime_ns
    again = score(url, MODEL, client=dask_client, progress=False)
    assert again.scored == 0 and again.commit == 0
    assert os.stat(table.embeddings_path).st_mtime_ns == before


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _codebook_by_hand(codebook, tiles: np.ndarray) -> np.ndarray:
    """A track's codebook embedding in numpy: every frame's word is a nearest one by squared
    Euclidean distances in float64 (up to float32 rounding, which may break near-ties the other
    way), folded as :func:`tests.helpers.codebook_by_hand` does."""
    frames = tiles.transpose(0, 2, 1).reshape(-1, tiles.shape[1]).astype(np.float64)
    frames = (frames - codebook.center.numpy()) / codebook.scale.numpy()
    words = codebook.words.numpy().astype(np.float64)
    distances = ((frames ** 2).sum(1)[:, None] - 2 * frames @ words.T
                 + (words ** 2).sum(1)[None])
    assigned = codebook.assign(torch.from_numpy(tiles)).numpy()
    np.testing.assert_allclose(distances[np.arange(len(frames)), assigned],
                               distances.min(1), rtol=1e-5, atol=1e-4)
    return codebook_by_hand(codebook, assigned)


@pytest.mark.parametrize("arch", ["kernel", "pooled"])
def test_track_level_embeddings_equal_their_definition(demo_store, dask_client, arch):
    """What scoring writes for ``kernel`` (unit standardized statistics beside 4 x the unit
    label scores, then the codebook's unit vector at half the length of those two) and
    ``pooled`` (mean and max over the tiles of the tile encoder), computed again track by
    track from the trained model's parts and the store's tiles."""
    name = f"sim-{arch}"
    small = {"epochs": 1, "width": 8} if arch == "pooled" else {}  # kernel has neither
    train(demo_store, name, TrainConfig(arch=arch, min_tracks=6, test_size=0.25, device="cpu",
                                        **small), progress=False)
    report = score(demo_store, name, client=dask_client, progress=False)
    store = featurestore.open(demo_store)
    model = ModelFiles(store, name).load_model()
    assert score_table(store, name).info().embedding == EMBEDDINGS[arch] + (
        CODEBOOK if arch == "kernel" else "")
    if arch == "kernel":
        assert len(model.codebook.words) > 256  # a fine codebook even on the small demo
    got = embeddings(store, name).sort_values(KEY).reset_index(drop=True)
    assert len(got) == report.scored == 48
    tracks = store.tracks(status="ok").sort_values(KEY).reset_index(drop=True)
    tiles = store.tiles(tracks).compute()
    with torch.inference_mode():
        if arch == "kernel":
            stats = np.stack(_statistics_by_hand(demo_store, model).sort_values(KEY)["expected"])
            per_track = [tiles.values[(tiles["catalog"].values == c)
                                      & (tiles["track_id"].values == t)]
                         for c, t in tracks[KEY].itertuples(index=False)]
            scores = np.concatenate([torch.sigmoid(model.forward_tracks(
                torch.from_numpy(x)[:, None], torch.tensor([len(x)]))).numpy()
                for x in per_track])
            codebook = np.stack([_codebook_by_hand(model.codebook, x) for x in per_track])
            expected = np.concatenate([_unit(stats), 4 * _unit(scores),
                                       0.5 * np.sqrt(17) * codebook], axis=1)
        else:
            expected = []
            for c, t in tracks[KEY].itertuples(index=False):
                mask = (tiles["catalog"].values == c) & (tiles["track_id"].values == t)
                encoded = model.embed(torch.from_numpy(tiles.values[mask])[:, None]).numpy()
                expected.append(np.concatenate([encoded.mean(0), encoded.max(0)]))
            expected = np.stack(expected)
    assert np.stack(got["embedding"]).shape == expected.shape
    np.testing.assert_allclose(np.stack(got["embedding"]), expected, rtol=1e-4, atol=1e-5)


def _by_hand(store, query: np.ndarray, exclude: set, keep=None) -> list[str]:
    """Track ids by cosine similarity to ``query``, computed plainly in pandas."""
    frame = embeddings(store, MODEL)
    if keep is not None:
        frame = frame[keep(frame)]
    frame = frame[~frame["track_id"].isin(exclude)]
    matrix = np.stack(frame["embedding"])
    cos = matrix @ query / np.linalg.norm(matrix, axis=1) / np.linalg.norm(query)
    return frame.assign(cos=cos).sort_values("cos", ascending=False, kind="stable")[
        "track_id"].tolist()


def test_similar_tracks_follow_cosine_and_filters(scored):
    store = featurestore.open(scored["url"])
    frame = embeddings(store, MODEL)
    query = frame.set_index("track_id").at["t00003", "embedding"]
    film = frame.set_index("track_id").at["t00003", "film"]

    got = similar(store, MODEL, "t00003", top=10)
    assert got["track_id"].tolist() == _by_hand(store, query, {"t00003"})[:10]
    assert got["rank"].tolist() == list(range(1, 11))
    assert (np.diff(got["similarity"]) <= 1e-7).all() and got["similarity"].max() <= 1.0001
    assert {"title", "film", "composer", "year", "genres"} <= set(got.columns)

    other = similar(store, MODEL, "t00003", top=47, exclude_own_film=True)
    assert film not in set(other["film"]) and len(other) == 48 - 3  # three cues a film
    assert other["track_id"].tolist() == _by_hand(
        store, query, {"t00003"}, lambda f: f["film"] != film)
    seventies = similar(store, MODEL, "t00003", top=50, year="1970:1979", genres=["Drama"])
    expected = _by_hand(store, query, {"t00003"}, lambda f: f["year"].between(1970, 1979)
                        & f["genres"].map(lambda g: "Drama" in g))
    assert seventies["track_id"].tolist() == expected and len(expected) > 1
    where = similar(store, MODEL, "t00003", top=50, where="year < 1970")
    assert len(where) and (where["year"] < 1970).all()

    with pytest.raises(ValueError, match="track 'nope' has no current embedding"):
        similar(store, MODEL, "nope")
    with pytest.raises(ValueError, match="to search from"):
        similar(store, MODEL)
    with pytest.raises(ValueError, match="not both"):
        similar(store, MODEL, "t00003", audio="cue.wav")


def test_similar_command_by_track_and_by_reference_audio(scored, tmp_path, capsys):
    url = scored["url"]
    store = featurestore.open(url)
    res, modules = cli_modules("similar", "--store", url, "--model", MODEL, "--track",
                               "t00003", "--top", "5", "--exclude-own-film", "--format", "json")
    assert res.returncode == 0, res.stderr
    # a library track's committed embedding needs neither the model nor the extraction
    assert not modules & {"torch", "scipy.signal", "librosa", "zarr"}, modules
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    expected = similar(store, MODEL, "t00003", top=5, exclude_own_film=True)
    assert [r["track_id"] for r in rows] == expected["track_id"].tolist()
    assert {"title", "film", "composer", "year", "genres", "similarity"} <= set(rows[0])

    # a library file given as a reference finds itself first, with similarity 1
    path = store.tracks(where="track_id == 't00007'")["path"].iloc[0]
    res = run_cli(capsys, "similar", "--store", url, "--model", MODEL, "--audio", path,
                  "--top", "3", "--format", "csv")
    assert res.returncode == 0, res.stderr
    found = pd.read_csv(io.StringIO(res.stdout))
    assert found["track_id"].iloc[0] == "t00007" and found["similarity"].iloc[0] > 0.9999
    from_python = similar(store, MODEL, audio=path, top=3)
    assert from_python["track_id"].tolist() == found["track_id"].tolist()

    bad = tmp_path / "notes.wav"
    bad.write_text("not audio at all")
    res = run_cli(capsys, "similar", "--store", url, "--model", MODEL, "--audio", str(bad))
    assert res.returncode == 2 and str(bad) in res.stderr and "not_audio" in res.stderr
    with pytest.raises(ValueError, match="no film to exclude"):
        similar(store, MODEL, audio=path, exclude_own_film=True)
    with pytest.raises(ValueError, match="names the query track's catalog; a reference audio"):
        similar(store, MODEL, audio=path, track_catalog="demo")


def test_evaluate_reports_neighbour_figures_against_feature_statistics(scored):
    store = featurestore.open(scored["url"])
    ev = evaluate(store, MODEL)
    near = ev.similarity
    test = ModelFiles(store, MODEL).read_frame("split.parquet").query("side == 'test'")
    frame = embeddings(store, MODEL).sort_values(KEY).reset_index(drop=True)
    queries = frame.reset_index().merge(test[KEY], on=KEY)["index"].to_numpy()
    assert near["embedding"]["queries"] == len(test) == len(queries)
    assert near["embedding"]["library"] == 48

    # counted by hand: the 10 nearest other tracks by cosine, with scikit-learn
    from sklearn.neighbors import NearestNeighbors

    def figures(x):
        nn = NearestNeighbors(n_neighbors=11, metric="cosine", algorithm="brute").fit(x)
        _, found = nn.kneighbors(x[queries])
        precision, jaccard = [], []
        for q, row in zip(queries, found):
            row = [r for r in row if r != q][:10]
            precision.append(np.mean([frame.at[r, "film"] == frame.at[q, "film"] for r in row]))
            mine = set(frame.at[q, "genres"])
            jaccard.append(np.mean([len(mine & set(frame.at[r, "genres"]))
                                    / len(mine | set(frame.at[r, "genres"])) for r in row]))
        return np.mean(precision), np.mean(jaccard)

    p, j = figures(np.stack(frame["embedding"]))
    assert near["embedding"]["same_film_precision"] == pytest.approx(p)
    assert near["embedding"]["label_jaccard"] == pytest.approx(j)
    # the baseline: feature statistics standardized over the library
    stats = np.stack(_statistics_by_hand(scored["url"], ModelFiles(
        store, MODEL).load_model()).sort_values(KEY)["expected"])
    model = ModelFiles(store, MODEL).load_model()
    raw = stats * model.scale.numpy() + model.center.numpy()
    p, j = figures((raw - raw.mean(0)) / raw.std(0))
    assert near["statistics"]["same_film_precision"] == pytest.approx(p)
    assert near["statistics"]["label_jaccard"] == pytest.approx(j)
    assert "same-film precision" in ev.summary()
    assert json.loads(ev.to_json())["similarity"] == near
    ours, base = near["embedding"], near["statistics"]
    page = markdown(ev)
    assert "The model scores each track from all its tiles at once" in page  # linear
    assert (f"| model embeddings | {ours['same_film_precision']:.3f} | "
            f"{ours['label_jaccard']:.3f} |") in page
    assert (f"| feature statistics (baseline) | {base['same_film_precision']:.3f} | "
            f"{base['label_jaccard']:.3f} |") in page
    assert "Similar tracks" not in markdown(dataclasses.replace(ev, similarity=None))
