"""Frame codebooks: tracks made of the same sounds are near even when their per-row statistics
are the same, a frame's word is its nearest, and codebooks save, load and stay absent from
models saved before them."""

from __future__ import annotations

import numpy as np
import torch

from tests.helpers import codebook_by_hand
from training.codebook import SIZE, FrameCodebook
from training.linear import kernel_svm, to_module
from training.track_models import QUANTILES, StatisticsLayout, TrackKernel, track_statistics

ROWS, FRAMES = 6, 48  # every sound in a third of the frames


def _tracks(seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Eight one-tile tracks, four of each of two "films". A film's frames are its three sounds
    (prototype frames) with a little noise. The second film's sounds are the first's with each
    row's values shuffled among the sounds: every row takes the same values in both films, so
    the rows' means, spreads and quantiles cannot tell the films apart; which values occur
    together can."""
    rng = np.random.default_rng(seed)
    first = rng.normal(0, 3, size=(3, ROWS))
    second = np.stack([rng.permutation(first[:, r]) for r in range(ROWS)], axis=1)
    tiles, films = [], []
    for film, sounds in enumerate((first, second)):
        for _ in range(4):
            which = np.repeat(np.arange(3), FRAMES // 3)
            frames = sounds[which] + rng.normal(0, 0.05, size=(FRAMES, ROWS))
            tiles.append(frames.T)
            films.append(film)
    return torch.from_numpy(np.stack(tiles)).float(), np.array(films)


def _nearest_other(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(1)


def test_tracks_of_the_same_sounds_are_nearest_where_statistics_cannot_tell():
    tiles, films = _tracks()
    counts = torch.ones(len(tiles), dtype=torch.long)
    stats = track_statistics(tiles, counts, QUANTILES).numpy()
    first, second = stats[films == 0], stats[films == 1]
    # the same statistics, up to the noise
    np.testing.assert_allclose(first.mean(0), second.mean(0), atol=0.1)

    codebook = FrameCodebook(ROWS).fit(tiles, seed=0, words=12)
    assert codebook.fitted and len(codebook.words) == 12
    embedded = codebook.embed(tiles, counts)
    assert embedded.shape == (8, SIZE)
    np.testing.assert_allclose(embedded.norm(dim=1).numpy(), 1.0, rtol=1e-6)
    assert (films[_nearest_other(embedded.numpy())] == films).all()


def test_a_frame_s_word_is_its_nearest_and_shares_are_per_track():
    tiles, _ = _tracks(1)
    codebook = FrameCodebook(ROWS).fit(tiles, seed=1, words=30, size=16)
    frames = torch.from_numpy(tiles.numpy().transpose(0, 2, 1).reshape(-1, ROWS)).double()
    frames = (frames - codebook.center.double()) / codebook.scale.double()
    brute = torch.cdist(frames, codebook.words.double()).argmin(1)
    torch.testing.assert_close(codebook.assign(tiles), brute)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as scoring runs on a GPU
        torch.testing.assert_close(codebook.assign(tiles), brute)
    # two tracks given as one of two tiles and one of six: shares over each track's own frames
    counts = torch.tensor([2, 6])
    together = codebook.embed(tiles, counts)
    torch.testing.assert_close(together[0], codebook.embed(tiles[:2], counts[:1])[0])
    torch.testing.assert_close(together[1], codebook.embed(tiles[2:], counts[1:])[0])
    np.testing.assert_allclose(together[0].numpy(),
                               codebook_by_hand(codebook, brute[:2 * FRAMES].numpy()), rtol=1e-5)
    # the hashing folds words into every value, half of them with each sign
    assert set(codebook.bucket.tolist()) == set(range(16))
    assert set(codebook.sign.tolist()) == {-1.0, 1.0}


def test_kernel_model_with_codebook_saves_loads_and_older_files_load_without():
    tiles, films = _tracks(2)
    counts = torch.ones(len(tiles), dtype=torch.long)
    layout = StatisticsLayout(QUANTILES)
    x = layout.of(tiles, counts).numpy()
    y = np.stack([films, 1 - films], axis=1)
    module = to_module(kernel_svm(3.0).fit(x, y), (ROWS, FRAMES), layout)
    before = module.track_outputs(tiles[:, None], counts)[1]
    assert before.shape[1] == len(x[0]) + 2  # no codebook yet: statistics and scores
    module.codebook.fit(tiles, seed=0, words=12)
    _, embedded = module.track_outputs(tiles[:, None], counts)
    assert embedded.shape[1] == len(x[0]) + 2 + SIZE
    torch.testing.assert_close(embedded[:, :-SIZE], before)
    # the codebook part has half the length of the rest
    np.testing.assert_allclose(embedded[:, -SIZE:].norm(dim=1).numpy(),
                               0.5 * before.norm(dim=1).numpy(), rtol=1e-5)

    loaded = TrackKernel((ROWS, FRAMES), 2)
    loaded.load_state_dict(module.state_dict())
    torch.testing.assert_close(loaded.track_outputs(tiles[:, None], counts)[1], embedded)

    older = {k: v for k, v in module.state_dict().items() if not k.startswith("codebook.")}
    loaded = TrackKernel((ROWS, FRAMES), 2)
    loaded.load_state_dict(older)
    assert not loaded.codebook.fitted
    torch.testing.assert_close(loaded.track_outputs(tiles[:, None], counts)[1], before)
