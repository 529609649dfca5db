"""The feature spec: every parameter that changes a tile's values, and its hash.

Two specs with the same hash produce the same tiles; a feature set in the store is named by the
hash, so tiles of different specs never share an array.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from dataclasses import asdict, dataclass, fields

# Bump when the extraction code changes its output for an unchanged spec.
ALGORITHM_VERSION = 1


#: Feature kinds a spec can ask for, each the name of its tile array in the store.
KINDS = ("mfcc", "logmel")
# Fields that only shape MFCC; a log-mel spec's hash leaves them out.
_MFCC_ONLY = ("n_mfcc", "drop_first")


@dataclass(frozen=True)
class FeatureSpec:
    """Tile parameters; the defaults are the reference study's MFCC.

    Audio is downmixed to mono, resampled to ``sample_rate`` (soxr HQ), and turned into a mel
    power spectrogram exactly as ``librosa.feature.melspectrogram`` does with these parameters
    (centred frames, zero padding, Slaney mel filters), then ``power_to_db(ref=1.0,
    top_db=top_db)`` over the whole track. ``kind="mfcc"`` (the default) continues as
    ``librosa.feature.mfcc`` (orthonormal DCT-II; the first ``drop_first`` of ``n_mfcc``
    coefficients dropped): tiles of ``(n_mfcc - drop_first, tile_frames)``. ``kind="logmel"``
    keeps the ``n_mels`` log-mel bands: tiles of ``(n_mels, tile_frames)``. Tiles hold
    ``tile_frames`` frames and start every ``tile_hop`` frames.

    ``top_db=None`` disables the clip; frames of near-silence then sit at the 1e-10 power floor,
    where float32 rounding differs between FFT implementations by up to ~0.2 (dB-cepstrum units).
    """

    kind: str = "mfcc"
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
        if self.kind not in KINDS:
            raise ValueError(f"FeatureSpec.kind must be one of {', '.join(KINDS)}, "
                             f"got {self.kind!r}")
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "n_mfcc",
                     "tile_frames", "tile_hop"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"FeatureSpec.{name} must be a positive integer, got {value!r}")
        if self.kind == "mfcc" and not 0 <= self.drop_first < self.n_mfcc:
            raise ValueError(f"FeatureSpec.drop_first must be in 0..{self.n_mfcc - 1}")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError("FeatureSpec.n_mfcc cannot exceed n_mels")
        shaped = [name for name in _MFCC_ONLY if getattr(self, name) != getattr(FeatureSpec, name)]
        if self.kind == "logmel" and shaped:  # ignored, and left out of the hash
            raise ValueError(f"FeatureSpec.{' and '.join(shaped)} shape{'s' * (len(shaped) == 1)} "
                             "MFCC only: a logmel set has n_mels bands")
        nyquist = self.sample_rate / 2
        # a band above the Nyquist frequency has no mel filter: every tile would be zeros
        if not isinstance(self.fmin, numbers.Real) or not 0 <= self.fmin < nyquist:
            raise ValueError(f"FeatureSpec.fmin must be a frequency in [0, {nyquist}), got "
                             f"{self.fmin!r}")
        if self.fmax is not None and not self.fmin < self.fmax <= nyquist:
            raise ValueError(f"FeatureSpec.fmax must be in ({self.fmin}, {nyquist}]")
        if self.top_db is not None and not 0 <= self.top_db < float("inf"):
            raise ValueError("FeatureSpec.top_db must be a finite non-negative number or None")

    @property
    def n_coefficients(self) -> int:
        """Rows of a tile: MFCC coefficients kept (41 - 1 = 40 by default), or mel bands."""
        return self.n_mfcc - self.drop_first if self.kind == "mfcc" else self.n_mels

    @property
    def coefficients(self) -> range:
        """What each tile row is: the MFCC coefficient's number, or the mel band's."""
        return range(self.drop_first, self.n_mfcc) if self.kind == "mfcc" else range(self.n_mels)

    @property
    def tile_shape(self) -> tuple[int, int]:
        """Shape of one tile: (coefficients or mel bands, frames), (40, 100) by default."""
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

    def hashed_fields(self) -> dict:
        """The fields that name the feature set. An MFCC spec's are those of specs written
        before log-mel existed (no ``kind``), so stores built then keep their feature sets."""
        out = self.to_dict()
        if self.kind == "mfcc":
            del out["kind"]
        else:
            for name in _MFCC_ONLY:
                del out[name]
        return out

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
        payload = json.dumps({**self.hashed_fields(), "algorithm_version": ALGORITHM_VERSION},
                             sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


#: Blosc's compressors and shuffles, as Zarr's ``BloscCodec`` names them.
BLOSC_CODECS = ("lz4", "lz4hc", "blosclz", "zstd", "snappy", "zlib")
BLOSC_SHUFFLES = ("noshuffle", "shuffle", "bitshuffle")


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
        # checked here, not when the arrays are made: a feature set keeps its encoding, and
        # one that cannot write would refuse every later build of its spec
        if not isinstance(self.chunk_tiles, int) or isinstance(self.chunk_tiles, bool) or (
                self.chunk_tiles <= 0):
            raise ValueError(f"TileEncoding.chunk_tiles must be a positive integer, got "
                             f"{self.chunk_tiles!r}")
        for name, allowed in (("codec", BLOSC_CODECS), ("shuffle", BLOSC_SHUFFLES),
                              ("clevel", range(10))):
            if getattr(self, name) not in allowed or isinstance(getattr(self, name), bool):
                raise ValueError(f"TileEncoding.{name} {getattr(self, name)!r}: choose one of "
                                 f"{', '.join(map(str, allowed))}")
