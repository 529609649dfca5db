"""MFCC and log-mel spectrograms computed as librosa defines them, streamed block by block.

librosa is the reference: the mel filterbank and window come from librosa/scipy themselves, and
``tests/test_mfcc.py`` proves this path equals ``librosa.feature.mfcc`` and
``librosa.power_to_db(librosa.feature.melspectrogram(...))`` to 1e-3. It is faster
because it frames the signal once in float32 and uses one real FFT and one matrix product per
block; it is streaming because ``power_to_db(top_db=...)`` clips relative to the whole track's
maximum, so the mel power is kept (small: n_mels values per frame) and the log, clip and DCT
happen once the track has ended.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft

from featurestore.spec import FeatureSpec

_AMIN = 1e-10


@functools.lru_cache(maxsize=8)
def _kernels(spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    # imported here: both are slow to import, and a build's driver never makes the kernels
    import librosa
    import scipy.signal

    window = scipy.signal.get_window(spec.window, spec.n_fft, fftbins=True).astype(np.float32)
    mel = librosa.filters.mel(sr=spec.sample_rate, n_fft=spec.n_fft, n_mels=spec.n_mels,
                              fmin=spec.fmin, fmax=spec.fmax, htk=False, norm="slaney",
                              dtype=np.float32)
    # Frames are rows: power (frames, bins) @ mel.T is ~14x faster than mel @ power.T, whose
    # transposed operand sends BLAS down a slow path.
    return window, np.ascontiguousarray(mel.T)


class FeatureStream:
    """Feed mono samples at ``spec.sample_rate`` with :meth:`push`; :meth:`finish` returns the
    features of the spec's kind (MFCC or log-mel) of everything pushed, shaped
    ``(spec.n_coefficients, n_frames)``, float32.

    Frames are centred as in librosa (``n_fft // 2`` zeros of padding at each end), so a signal
    of ``n`` samples gives ``1 + n // hop_length`` frames.
    """

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self._window, self._mel_t = _kernels(spec)
        self._buffer = np.zeros(spec.n_fft // 2, dtype=np.float32)
        self._mel_frames: list[np.ndarray] = []
        self.n_samples = 0
        self._finished = False

    def push(self, samples: np.ndarray) -> None:
        """Add mono float32 samples; complete frames are turned into mel power right away."""
        if self._finished:
            raise RuntimeError("FeatureStream.push after finish")
        self.n_samples += len(samples)
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32, copy=False)])
        self._drain()

    def _drain(self) -> None:
        n_fft, hop = self.spec.n_fft, self.spec.hop_length
        if len(self._buffer) < n_fft:
            return
        count = 1 + (len(self._buffer) - n_fft) // hop
        frames = np.lib.stride_tricks.sliding_window_view(self._buffer, n_fft)[::hop][:count]
        spectrum = scipy.fft.rfft(frames * self._window, axis=1)
        power = spectrum.real ** 2 + spectrum.imag ** 2
        self._mel_frames.append(power @ self._mel_t)
        self._buffer = self._buffer[count * hop:].copy()

    def mel_power(self) -> np.ndarray:
        """Mel power spectrogram of what was pushed, after :meth:`finish`: (n_mels, frames)."""
        if not self._mel_frames:
            return np.zeros((self.spec.n_mels, 0), dtype=np.float32)
        return np.concatenate(self._mel_frames, axis=0).T

    def finish(self) -> np.ndarray:
        """End the signal and return its features, ``(n_coefficients, n_frames)`` float32."""
        if not self._finished:
            self._buffer = np.concatenate(
                [self._buffer, np.zeros(self.spec.n_fft // 2, dtype=np.float32)])
            self._drain()
            self._finished = True
        log_spec = power_to_db(self.mel_power(), self.spec)
        if self.spec.kind == "logmel":
            return np.ascontiguousarray(log_spec, dtype=np.float32)
        return db_to_mfcc(log_spec, self.spec)


def power_to_db(mel_power: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """librosa's ``power_to_db(ref=1.0, amin=1e-10, top_db)``: the clip is relative to the
    maximum of the whole array, so it is applied once the track has ended."""
    log_spec = 10.0 * np.log10(np.maximum(_AMIN, mel_power))
    if spec.top_db is not None and log_spec.size:
        log_spec = np.maximum(log_spec, log_spec.max() - spec.top_db)
    return log_spec


def db_to_mfcc(log_spec: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Orthonormal DCT-II of a dB mel spectrogram, keeping coefficients ``drop_first ..
    n_mfcc - 1``."""
    coefficients = scipy.fft.dct(log_spec, axis=0, type=2, norm="ortho")[: spec.n_mfcc]
    return np.ascontiguousarray(coefficients[spec.drop_first:], dtype=np.float32)


def features(y: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """The spec's features (MFCC or log-mel) of a whole mono signal at ``spec.sample_rate``:
    ``(n_coefficients, n_frames)``."""
    stream = FeatureStream(spec)
    stream.push(np.asarray(y, dtype=np.float32))
    return stream.finish()
