"""The feature spec: every parameter that changes a tile's values, and its hash.

Two specs with the same hash produce the same tiles; a feature set in the store is named by the
hash, so tiles of different specs never share an array.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

# Bump when the extraction code changes its output for an unchanged spec.
ALGORITHM_VERSION = 1


@dataclass(frozen=True)
class FeatureSpec:
    """MFCC tile parameters; the defaults are the reference study's.

    Audio is downmixed to mono, resampled to ``sample_rate`` (soxr HQ), and turned into MFCC
    exactly as ``librosa.feature.mfcc`` does with these parameters (centred frames, zero
    padding, Slaney mel filters, ``power_to_db(ref=1.0, top_db=top_db)`` over the whole track,
    orthonormal DCT-II). The first ``drop_first`` coefficients are dropped, and the rest cut
    into tiles of ``tile_frames`` frames, starting every ``tile_hop`` frames.

    ``top_db=None`` disables the clip; frames of near-silence then sit at the 1e-10 power floor,
    where float32 rounding differs between FFT implementations by up to ~0.2 (dB-cepstrum units).
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 2048
    window: str = "hann"
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    n_mfcc: int = 41
    drop_first: int = 1
    top_db: float | None = 80.0
    tile_frames: int = 100
    tile_hop: int = 100

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "n_mfcc",
                     "tile_frames", "tile_hop"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"FeatureSpec.{name} must be a positive integer, got {value!r}")
        if not 0 <= self.drop_first < self.n_mfcc:
            raise ValueError(f"FeatureSpec.drop_first must be in 0..{self.n_mfcc - 1}")
        if self.n_mfcc > self.n_mels:
            raise ValueError("FeatureSpec.n_mfcc cannot exceed n_mels")
        nyquist = self.sample_rate / 2
        if self.fmax is not None and not self.fmin < self.fmax <= nyquist:
            raise ValueError(f"FeatureSpec.fmax must be in ({self.fmin}, {nyquist}]")
        if self.top_db is not None and self.top_db < 0:
            raise ValueError("FeatureSpec.top_db must be non-negative or None")

    @property
    def n_coefficients(self) -> int:
        """Coefficients kept per frame (41 - 1 = 40 by default)."""
        return self.n_mfcc - self.drop_first

    @property
    def tile_shape(self) -> tuple[int, int]:
        """Shape of one tile: (coefficients, frames), (40, 100) by default."""
        return (self.n_coefficients, self.tile_frames)

    @property
    def tile_seconds(self) -> float:
        """Seconds of audio one tile spans (100 * 2048 / 22050 = 9.29 s by default)."""
        return self.tile_frames * self.hop_length / self.sample_rate

    def n_frames(self, n_samples: int) -> int:
        """MFCC frames of a signal of ``n_samples`` at ``sample_rate`` (centred framing)."""
        return 1 + n_samples // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - {"algorithm_version", "hash"}
        if unknown:
            raise ValueError(f"unknown FeatureSpec fields: {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def hash(self) -> str:
        """16 hex digits naming this feature set; changes with any field or the algorithm."""
        payload = json.dumps({**self.to_dict(), "algorithm_version": ALGORITHM_VERSION},
                             sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TileEncoding:
    """How tiles are laid out on storage. It does not change tile values, so it is not part of
    the spec hash; it is fixed when a feature set's arrays are created.

    ``chunk_tiles`` tiles share a chunk (one object in the store, the unit a build task owns and a
    loader reads). Blosc's byte shuffle before zstd is what makes float32 MFCC compress at all.
    """

    chunk_tiles: int = 256
    codec: str = "zstd"
    clevel: int = 3
    shuffle: str = "shuffle"

    def __post_init__(self) -> None:
        if self.chunk_tiles <= 0:
            raise ValueError("TileEncoding.chunk_tiles must be positive")
