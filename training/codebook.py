"""Frame codebooks: which sounds a track is made of, as a bag of audio words.

A :class:`FrameCodebook` is fitted on the frames (one feature column of a tile each) of the
training tracks: standardized, then clustered by k-means into :data:`WORDS` words
(scikit-learn's ``MiniBatchKMeans`` on at most :data:`FIT_FRAMES` of them). A track is then the
share of its frames nearest each word, square-rooted (the Hellinger embedding of a histogram,
so that a few common words do not outweigh the rest), folded into :data:`SIZE` values by a
fixed signed hashing of the words (a count sketch: inner products kept on average, so the
vector stays small enough for exact search over large libraries), and scaled to unit length.

Why: cues of one film share instruments, samples and mixing. A fine codebook finds the frames
two tracks have in common, which per-track means and quantiles average away. On the game-score
corpus, adding it to the ``kernel`` embedding raised same-film precision at 10 on all five folds
by game with log-mel tiles and on four of five with MFCC tiles (docs/similarity.md).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: Words of a codebook. Finer codebooks found more same-film neighbours on the game-score
#: corpus (256: none gained; 1,024 to 4,096: some; 8,192 and 16,384: the most, level).
WORDS = 8192

#: Values of a track's codebook embedding (the words folded by a count sketch). 1,024 kept
#: nearly all of the full histogram's gain there; 512 lost half of it.
SIZE = 1024

#: Frames k-means is fitted on at most, drawn at random (seeded) from the training tracks.
FIT_FRAMES = 50_000

#: Frames assigned to their words at once: 4,096 x 8,192 distances are 128 MiB in float32. On
#: 2 cores neither larger blocks nor cache-sized ones (512) were reliably faster
#: (benchmarks/README.md, similarity_codebook.py).
ASSIGN_CHUNK = 4096


def frames_of(tiles: torch.Tensor) -> torch.Tensor:
    """``(n, [1,] rows, frames)`` tiles to their frames, ``(n * frames, rows)``, tile after
    tile."""
    n, rows, frames = len(tiles), tiles.shape[-2], tiles.shape[-1]
    return tiles.reshape(n, rows, frames).transpose(1, 2).reshape(n * frames, rows)


class FrameCodebook(nn.Module):
    """A codebook of frames and the signed hashing that folds its words into :data:`SIZE`
    values. Unfitted (no words) until :meth:`fit`; a saved codebook's buffers take their sizes
    from the file, and a file without one (models saved before codebooks) loads unfitted."""

    def __init__(self, rows: int):
        super().__init__()
        self.register_buffer("center", torch.zeros(rows))
        self.register_buffer("scale", torch.ones(rows))
        self.register_buffer("words", torch.zeros(0, rows))
        self.register_buffer("bucket", torch.zeros(0, dtype=torch.long))
        self.register_buffer("sign", torch.zeros(0))
        self.register_buffer("size", torch.tensor(SIZE))

    @property
    def fitted(self) -> bool:
        """Whether the codebook has words (models saved before codebooks have none)."""
        return len(self.words) > 0

    def fit(self, tiles: torch.Tensor, seed: int = 0, words: int = WORDS, size: int = SIZE,
            max_frames: int = FIT_FRAMES) -> FrameCodebook:
        """Fit on the frames of ``tiles`` (the training tracks'): their per-row mean and
        standard deviation, then k-means on at most ``max_frames`` of them (fewer words when
        there are fewer than four frames a word)."""
        from sklearn.cluster import MiniBatchKMeans

        frames = frames_of(tiles)
        # the moments in float64 (sums over hours of frames), a block at a time
        total = frames.new_zeros(frames.shape[1], dtype=torch.float64)
        squares = total.clone()
        for part in frames.split(FIT_FRAMES):
            part = part.double()
            total += part.sum(0)
            squares += (part * part).sum(0)
        center = total / len(frames)
        scale = (squares / len(frames) - center * center).clamp_min(0.0).sqrt().clamp_min(1e-6)
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(frames), min(max_frames, len(frames)), replace=False)
        sample = (frames[torch.from_numpy(chosen).to(frames.device)].double() - center) / scale
        k = max(1, min(words, len(sample) // 4))
        # Random initial words: k-means++ over 8,192 words took 2.5-6x longer to fit (74.7 s
        # against 12.0 s for 50,000 frames of 128 bands on 2 cores).
        kmeans = MiniBatchKMeans(k, init="random", batch_size=4096, n_init=1, random_state=seed)
        kmeans.fit(sample.cpu().numpy().astype(np.float32))
        device = tiles.device
        self.center = center.float().to(device)
        self.scale = scale.float().to(device)
        self.words = torch.from_numpy(kmeans.cluster_centers_).float().to(device)
        self.bucket = (torch.arange(k) % size).to(device)
        self.sign = torch.from_numpy(rng.choice([-1.0, 1.0], k)).float().to(device)
        self.size = torch.tensor(size, device=device)
        return self

    def assign(self, tiles: torch.Tensor) -> torch.Tensor:
        """The word of every frame of ``tiles``, ``(n * frames,)``, tile after tile."""
        # In float32 even under autocast (scoring on a GPU runs in bfloat16): rounded distances
        # would pick other words than the CPU does for a query embedded there.
        with torch.autocast(tiles.device.type, enabled=False):
            frames = (frames_of(tiles).float() - self.center) / self.scale
            # nearest: the least |w|^2 / 2 - x.w (|x - w|^2 less |x|^2, halved), one product
            half = self.words.square().sum(1) / 2
            return torch.cat([torch.addmm(half, part, self.words.T, alpha=-1).argmin(1)
                              for part in frames.split(ASSIGN_CHUNK)])

    def embed(self, tiles: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """``(tracks, size)`` unit rows: each track's word shares (over the frames of its
        ``counts`` tiles, stored track after track), square-rooted, folded by the signed
        hashing."""
        frames = tiles.shape[-1]
        track = torch.repeat_interleave(torch.arange(len(counts), device=tiles.device),
                                        counts * frames)
        hist = torch.zeros(len(counts), len(self.words), device=tiles.device)
        hist.index_put_((track, self.assign(tiles)), torch.ones(len(track), device=tiles.device),
                        accumulate=True)
        shares = (hist / (counts * frames).to(hist.dtype)[:, None]).sqrt()
        folded = hist.new_zeros(len(counts), int(self.size)).index_add_(
            1, self.bucket, shares * self.sign)
        return folded / folded.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for name, _ in self.named_buffers(recurse=False):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        mine = [k for k in missing_keys if k.startswith(prefix)]
        if len(mine) == len(dict(self.named_buffers(recurse=False))):
            for key in mine:  # saved before codebooks: none
                missing_keys.remove(key)
