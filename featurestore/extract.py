"""One track's audio to tiles: fetch, hash, decode, MFCC, cut; failures become statuses."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np

from featurestore.audio import AudioInfo, check_signal, mono_blocks, open_audio
from featurestore.errors import TrackFailure
from featurestore.mfcc import FeatureStream
from featurestore.spec import FeatureSpec
from featurestore.tiles import cut_tiles
from featurestore.urls import is_local

_READ_BLOCK = 8 << 20


@dataclass
class TrackResult:
    """What extracting one track gave: tiles (empty unless ``status == 'ok'``) and facts."""

    status: str
    error: str
    tiles: np.ndarray
    content_hash: str = ""
    duration_s: float = 0.0
    source_rate: int = 0
    channels: int = 0


@contextlib.contextmanager
def _local_copy(path: str, storage_options: dict | None) -> Iterator[tuple[str, str]]:
    """Yield ``(local_path, content_hash)``: the file itself when local, else a temporary
    copy streamed from the remote store, hashed on the way (bounded memory)."""
    digest = hashlib.blake2b(digest_size=16)
    if is_local(path):
        local = path[len("file://"):] if path.startswith("file://") else path
        with open(local, "rb") as f:
            while block := f.read(_READ_BLOCK):
                digest.update(block)
        yield local, digest.hexdigest()
        return
    suffix = os.path.splitext(path)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        with fsspec.open(path, "rb", **(storage_options or {})) as src:
            while block := src.read(_READ_BLOCK):
                digest.update(block)
                tmp.write(block)
        tmp.flush()
        yield tmp.name, digest.hexdigest()


def extract_track(path: str, spec: FeatureSpec, storage_options: dict | None = None,
                  known_hash: str | None = None) -> TrackResult | None:
    """Build one track's tiles.

    Returns ``None`` when the file's content hash equals ``known_hash`` (its tiles are already
    stored for this spec: a touched but unchanged file). Never raises for a bad track: the
    failure is returned as a status and a reason.
    """
    empty = np.zeros((0, *spec.tile_shape), dtype=np.float32)
    content_hash = ""
    try:
        with _local_copy(path, storage_options) as (local, content_hash):
            if known_hash is not None and content_hash == known_hash:
                return None
            if os.path.getsize(local) == 0:
                raise TrackFailure("empty", "the file has zero bytes")
            info = AudioInfo(source_rate=0, channels=0)
            with open_audio(local) as sound:
                info.source_rate, info.channels = sound.samplerate, sound.channels
                stream = FeatureStream(spec)
                for block in mono_blocks(sound, spec.sample_rate, info):
                    stream.push(block)
            check_signal(info)
            features = stream.finish()
            tiles = cut_tiles(features, spec)
            if len(tiles) == 0:
                raise TrackFailure(
                    "too_short", f"{info.duration_s:.2f} s of audio, one tile needs "
                                 f"{spec.tile_seconds:.2f} s")
            return TrackResult("ok", "", tiles, content_hash, info.duration_s,
                               info.source_rate, info.channels)
    except TrackFailure as failure:
        return TrackResult(failure.status, failure.reason, empty, content_hash)
    except FileNotFoundError:
        return TrackResult("missing", f"no such file: {path}", empty)
    except IsADirectoryError:  # a path that names a folder is no audio file
        return TrackResult("not_audio", f"a folder, not an audio file: {path}", empty)
    except Exception as exc:  # an unknown failure must not stop the library's build
        last = traceback.extract_tb(exc.__traceback__)[-1]
        return TrackResult("error", f"{type(exc).__name__}: {exc} (at {last.filename}:"
                                    f"{last.lineno})", empty, content_hash)
