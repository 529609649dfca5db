"""Decoding audio to mono blocks at the spec's sample rate, in bounded memory.

Decoding is streamed: a 60-minute 96 kHz file never sits in memory whole. Each block is checked
for NaN and infinity, downmixed with one matrix product (``librosa.to_mono``'s mean, ~20x
faster), and resampled with soxr at the quality ``librosa.load`` uses (HQ), whose streaming
output equals its one-shot output.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from featurestore.errors import TrackFailure

#: Frames decoded per block: ~3 s at 44.1 kHz; bounds decode memory per worker.
BLOCK_FRAMES = 1 << 17

# libsndfile's messages for a file it cannot identify as audio at all.
_NOT_AUDIO = ("format not recognised", "unknown format", "file contains data in an unknown format",
              "unimplemented format", "bad format",
              # what libsndfile says of an existing file that its MPEG reader cannot sync on
              "is not a regular file")


# libsndfile's log of a WAV whose data chunk announces more bytes than the file holds: it
# decodes what is there without an error and counts only those frames, so the shortfall is
# read from its log. 0 and 0xFFFFFFFF are streaming writers' placeholders, not sizes.
_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


def check_complete(sound: sf.SoundFile) -> None:
    """Raise :class:`TrackFailure` ``corrupt`` for a WAV cut short (a copy interrupted, say):
    its header announces more audio than the file holds (more than 2% more)."""
    found = _DATA_SIZE.search(sound.extra_info)
    if found is None:
        return
    announced, held = int(found[1]), int(found[2])
    if announced not in _UNKNOWN_SIZES and announced > held * 1.02:
        raise TrackFailure("corrupt", f"truncated: the file holds {held} of the {announced} "
                                      f"bytes of audio its header announces "
                                      f"({held / announced:.0%})")


@dataclass
class AudioInfo:
    """What the decoder found: the source rate and channels, and the samples it gave."""

    source_rate: int
    channels: int
    source_frames: int = 0
    peak: float = 0.0
    minimum: float = np.inf
    maximum: float = -np.inf

    @property
    def duration_s(self) -> float:
        return self.source_frames / self.source_rate if self.source_rate else 0.0


def open_audio(source) -> sf.SoundFile:
    """Open ``source`` (a local path or a binary file object) with libsndfile, mapping its
    errors onto track statuses."""
    try:
        return sf.SoundFile(source)
    except sf.LibsndfileError as exc:
        message = str(exc).lower()
        status = "not_audio" if any(m in message for m in _NOT_AUDIO) else "corrupt"
        raise TrackFailure(status, f"libsndfile cannot open it: {exc}") from None
    except RuntimeError as exc:  # older soundfile raises RuntimeError
        raise TrackFailure("not_audio", f"libsndfile cannot open it: {exc}") from None


def mono_blocks(sound: sf.SoundFile, target_rate: int, info: AudioInfo,
                block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks of ``sound`` resampled to ``target_rate``.

    ``info`` is updated as blocks pass (frames, peak, min, max), so that silence is judged on the
    source samples. Raises :class:`TrackFailure` for a file cut short
    (:func:`check_complete`), NaN/Inf samples and decode errors.
    """
    check_complete(sound)
    channels = sound.channels
    downmix = np.full((channels, 1), 1.0 / channels, dtype=np.float32)
    resampler = (None if sound.samplerate == target_rate else
                 soxr.ResampleStream(sound.samplerate, target_rate, 1, dtype="float32",
                                     quality="HQ"))
    expected = sound.frames if sound.seekable() else None
    while True:
        try:
            block = sound.read(block_frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise TrackFailure("corrupt", f"decoding failed after {info.source_frames} frames: "
                                          f"{exc}") from None
        last = len(block) < block_frames
        if len(block):
            # min and max carry everything needed: NaN and Inf propagate into them, and they
            # give the peak for the silence check, without a full-size temporary.
            lo, hi = float(block.min()), float(block.max())
            if not (np.isfinite(lo) and np.isfinite(hi)):
                bad = int((~np.isfinite(block)).any(axis=1).argmax()) + info.source_frames
                raise TrackFailure("invalid_samples",
                                   f"NaN or infinite sample at frame {bad} "
                                   f"({bad / sound.samplerate:.2f} s)")
            info.source_frames += len(block)
            info.minimum, info.maximum = min(info.minimum, lo), max(info.maximum, hi)
            info.peak = max(info.peak, abs(lo), abs(hi))
            mono = block[:, 0] if channels == 1 else (block @ downmix)[:, 0]
        else:
            mono = np.zeros(0, dtype=np.float32)
        if resampler is not None:
            mono = resampler.resample_chunk(mono, last=last)
        if len(mono):
            yield mono
        if last:
            break
    if expected is not None and expected > 0 and info.source_frames < expected * 0.98:
        raise TrackFailure("corrupt", f"truncated: decoded {info.source_frames} of {expected} "
                                      f"frames the header announces")


def check_signal(info: AudioInfo) -> None:
    """Raise :class:`TrackFailure` ``silent`` for digital silence or a constant (DC) signal."""
    if info.source_frames == 0:
        raise TrackFailure("corrupt", "no audio frames could be decoded")
    if info.peak < 1e-6:
        raise TrackFailure("silent", f"digital silence (peak {info.peak:.1e})")
    if info.maximum - info.minimum < 1e-6:
        raise TrackFailure("silent", f"constant signal (DC offset {info.maximum:.3g}), no audio "
                                     "content")
