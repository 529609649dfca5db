"""The fast MFCC and log-mel paths equal librosa's, streamed or not, and tiles are cut as
specified."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from featurestore.extract import extract_track
from featurestore.mfcc import FeatureStream, features
from featurestore.spec import FeatureSpec, TileEncoding
from featurestore.tiles import count_tiles, cut_tiles
from tests.helpers import librosa_mfcc, tone, write_audio


SPECS = [
    FeatureSpec(),
    FeatureSpec(sample_rate=16000, n_fft=1024, hop_length=512, n_mels=64, n_mfcc=20,
                drop_first=0, tile_frames=50, tile_hop=25),
    FeatureSpec(n_fft=2048, hop_length=512, fmin=50.0, fmax=8000.0, top_db=60.0),
]


def librosa_logmel(y: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    mel = librosa.feature.melspectrogram(y=y, sr=spec.sample_rate, n_fft=spec.n_fft,
                                         hop_length=spec.hop_length, n_mels=spec.n_mels,
                                         fmin=spec.fmin, fmax=spec.fmax)
    return librosa.power_to_db(mel, top_db=spec.top_db)


def signal_of(kind: str, sr: int) -> np.ndarray:
    if kind == "tone":
        return tone(17.3, sr)
    if kind == "noise":
        return (0.2 * np.random.default_rng(1).standard_normal(int(13.1 * sr))).astype(
            np.float32)
    y = librosa.chirp(fmin=60, fmax=sr / 3, sr=sr, duration=11.0).astype(np.float32) * 0.5
    y[: sr * 2] = 0.0  # the -80 dB floor must be taken from the whole track
    return y


@pytest.mark.parametrize("spec", SPECS, ids=["study", "small", "fmax-topdb60"])
@pytest.mark.parametrize("signal", ["tone", "noise", "chirp-with-silence"])
def test_mfcc_equals_librosa(spec, signal):
    y = signal_of(signal, spec.sample_rate)
    expected = librosa_mfcc(y, spec)
    ours = features(y, spec)
    assert ours.shape == expected.shape == (spec.n_coefficients, spec.n_frames(len(y)))
    np.testing.assert_allclose(ours, expected, atol=1e-3, rtol=0)


LOGMEL_SPECS = [
    FeatureSpec(kind="logmel"),
    FeatureSpec(kind="logmel", sample_rate=16000, n_fft=1024, hop_length=512, n_mels=64,
                tile_frames=50, tile_hop=25),
    FeatureSpec(kind="logmel", hop_length=512, n_mels=96, fmin=50.0, fmax=8000.0, top_db=60.0),
]


@pytest.mark.parametrize("spec", LOGMEL_SPECS, ids=["128-bands", "small", "fmax-topdb60"])
@pytest.mark.parametrize("signal", ["tone", "noise", "chirp-with-silence"])
def test_logmel_equals_librosa_melspectrogram_power_to_db(spec, signal):
    y = signal_of(signal, spec.sample_rate)
    expected = librosa_logmel(y, spec)
    ours = features(y, spec)
    assert ours.shape == expected.shape == (spec.n_mels, spec.n_frames(len(y)))
    np.testing.assert_allclose(ours, expected, atol=1e-3, rtol=0)


def test_logmel_track_tiles_equal_librosa(tmp_path):
    spec = FeatureSpec(kind="logmel", n_mels=64)
    path = write_audio(tmp_path / "x.flac", 21.0, 44100, 2, seed=5)
    result = extract_track(path, spec)
    assert result.status == "ok", result.error
    y, _ = librosa.load(path, sr=spec.sample_rate)
    expected = cut_tiles(librosa_logmel(y, spec), spec)
    assert result.tiles.shape == expected.shape == (2, 64, 100)
    np.testing.assert_allclose(result.tiles, expected, atol=1e-3, rtol=0)


def test_logmel_spec_is_its_own_feature_set():
    mfcc, logmel = FeatureSpec(), FeatureSpec(kind="logmel")
    assert logmel.hash != mfcc.hash and logmel.tile_shape == (128, 100)
    assert list(logmel.coefficients) == list(range(128))
    assert list(mfcc.coefficients) == list(range(1, 41))
    # MFCC-only fields do not shape a log-mel set: setting one is refused, not ignored; its
    # own parameters name it.
    with pytest.raises(ValueError, match="FeatureSpec.n_mfcc shapes MFCC only"):
        FeatureSpec(kind="logmel", n_mfcc=20)
    assert FeatureSpec(kind="logmel", n_mels=64).hash != logmel.hash
    assert FeatureSpec.from_dict(logmel.to_dict()) == logmel
    with pytest.raises(ValueError, match="kind"):
        FeatureSpec(kind="cqt")


@pytest.mark.parametrize("block", [1, 777, 2048, 4096, 100_000])
def test_streamed_mfcc_equals_whole_signal(block):
    spec = FeatureSpec()
    y = tone(12.0, spec.sample_rate, seed=3)
    stream = FeatureStream(spec)
    for i in range(0, len(y), block if block > 1 else 997):
        stream.push(y[i:i + (block if block > 1 else 997)])
    np.testing.assert_allclose(stream.finish(), features(y, spec), atol=1e-4)


@pytest.mark.parametrize("ext, sr, channels", [
    ("wav", 22050, 1), ("wav", 44100, 2), ("flac", 48000, 2), ("mp3", 44100, 2),
    ("ogg", 32000, 1), ("fwav", 8000, 1), ("wav", 96000, 8),
])
def test_track_tiles_equal_librosa_load_and_mfcc(tmp_path, ext, sr, channels):
    """End to end: decode, downmix, resample, MFCC, tiles == librosa.load + feature.mfcc."""
    spec = FeatureSpec()
    path = write_audio(tmp_path / f"x.{'wav' if ext == 'fwav' else ext}", 21.0, sr, channels,
                       seed=5, kind=ext)
    result = extract_track(path, spec)
    assert result.status == "ok", result.error
    y, _ = librosa.load(path, sr=spec.sample_rate)
    expected = cut_tiles(librosa_mfcc(y, spec), spec)
    assert result.tiles.shape == expected.shape == (2, 40, 100)
    np.testing.assert_allclose(result.tiles, expected, atol=1e-3, rtol=0)
    assert result.source_rate == sr and result.channels == channels
    assert abs(result.duration_s - 21.0) < 0.1


def test_tiles_cut_edges():
    spec = FeatureSpec(tile_frames=100, tile_hop=100)
    feats = np.arange(40 * 350, dtype=np.float32).reshape(40, 350)
    tiles = cut_tiles(feats, spec)
    assert tiles.shape == (3, 40, 100)  # the trailing 50 frames are dropped
    np.testing.assert_array_equal(tiles[2], feats[:, 200:300])
    assert tiles.flags["C_CONTIGUOUS"] and not np.shares_memory(tiles, feats)
    assert count_tiles(99, spec) == 0 and count_tiles(100, spec) == 1
    assert count_tiles(199, spec) == 1 and count_tiles(200, spec) == 2
    assert cut_tiles(feats[:, :99], spec).shape == (0, 40, 100)
    overlap = FeatureSpec(tile_frames=100, tile_hop=50)
    tiles = cut_tiles(feats, overlap)
    assert tiles.shape == (count_tiles(350, overlap), 40, 100) == (6, 40, 100)
    np.testing.assert_array_equal(tiles[5], feats[:, 250:350])
    with pytest.raises(ValueError, match="coefficients"):
        cut_tiles(feats[:39], spec)


def test_track_exactly_one_tile_long(tmp_path):
    spec = FeatureSpec()
    # 99 hops of audio give 1 + 99 = 100 frames: exactly one tile; one hop less gives none.
    write_audio(tmp_path / "one.wav", 99 * 2048 / 22050 + 1e-3, 22050)
    write_audio(tmp_path / "short.wav", 98 * 2048 / 22050 + 1e-3, 22050)
    assert extract_track(str(tmp_path / "one.wav"), spec).tiles.shape == (1, 40, 100)
    short = extract_track(str(tmp_path / "short.wav"), spec)
    assert short.status == "too_short" and "one tile needs 9.29 s" in short.error


def test_spec_hash_names_the_feature_set():
    # Stores name feature sets by this hash: a change to it orphans every built store.
    assert FeatureSpec().hash == "a5c5ca40bcb9bf08"
    assert FeatureSpec().hash != FeatureSpec(tile_hop=50).hash
    assert FeatureSpec.from_dict(FeatureSpec().to_dict()) == FeatureSpec()
    assert FeatureSpec().tile_shape == (40, 100)
    assert abs(FeatureSpec().tile_seconds - 9.2880) < 1e-3
    with pytest.raises(ValueError, match="n_fft"):
        FeatureSpec(n_fft=0)
    with pytest.raises(ValueError, match=r"fmin must be a frequency in \[0, 11025.0\)"):
        FeatureSpec(fmin=20000.0)  # no mel filter: every tile would be zeros
    with pytest.raises(ValueError, match="top_db must be a finite"):
        FeatureSpec(top_db=float("nan"))
    # an encoding that could not write is refused before a feature set keeps it
    for bad in ({"clevel": 99}, {"codec": "nope"}, {"shuffle": "x"}, {"chunk_tiles": 2.5}):
        with pytest.raises(ValueError, match=f"TileEncoding.{next(iter(bad))}"):
            TileEncoding(**bad)
    with pytest.raises(ValueError, match="unknown FeatureSpec fields"):
        FeatureSpec.from_dict({"hop": 3})
