"""Test helpers: synthetic audio written with soundfile, small catalogs, reading a store's tiles
back per track, polling, and the command line as a subprocess."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import soundfile as sf

import featurestore
from catalogs.writer import write_catalog

FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"),
           "mp3": ("MP3", "MPEG_LAYER_III"), "ogg": ("OGG", "VORBIS"), "fwav": ("WAV", "FLOAT")}


def tone(seconds: float, sr: int = 22050, channels: int = 1, seed: int = 0,
         freq: float | None = None) -> np.ndarray:
    """A harmonic tone with a little noise and an amplitude wobble: enough spectral content
    that MFCC values are not degenerate."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = freq or rng.uniform(110, 440)
    y = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    y = y * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t))
    y = 0.3 * y / np.max(np.abs(y)) + 0.01 * rng.standard_normal(len(t))
    if channels == 1:
        return y.astype(np.float32)
    return np.stack([y * (1 - 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


def write_audio(path, seconds: float = 12.0, sr: int = 22050, channels: int = 1,
                seed: int = 0, kind: str | None = None) -> str:
    """Write a synthetic tone; the format follows the extension unless ``kind`` names one."""
    path = str(path)
    kind = kind or os.path.splitext(path)[1][1:]
    fmt, subtype = FORMATS[kind]
    sf.write(path, tone(seconds, sr, channels, seed), sr, format=fmt, subtype=subtype)
    return path


def small_library(directory, n: int = 6, seconds: float = 12.0, start_seed: int = 0,
                  name: str = "catalog.csv") -> str:
    """``n`` WAV tracks of ``seconds`` each (one tile per 9.29 s) and their catalog."""
    directory = str(directory)
    os.makedirs(os.path.join(directory, "audio"), exist_ok=True)
    rows = []
    genres = ["Drama|Romance", "Action, Thriller", "Comedy", "sci-fi;Adventure"]
    for i in range(n):
        rel = f"audio/s{i:03d}.wav"
        write_audio(os.path.join(directory, rel), seconds, seed=start_seed + i)
        rows.append({"track_id": f"s{i:03d}", "path": rel, "title": f"Cue {i}",
                     "film": f"Film {i % 3}", "composer": "Test Composer", "year": 1960 + i,
                     "genres": genres[i % len(genres)]})
    return write_catalog(os.path.join(directory, name), rows)


def copy_demo_library(catalog: str, directory, n_tracks: int = 48) -> str:
    """``generate_demo_library(directory, n_tracks)``, its audio copied from the library whose
    catalog is ``catalog`` (generated with at least ``n_tracks`` cues) instead of synthesized
    again: the generator keeps files already there and is seeded per cue, so the first
    ``n_tracks`` files are the ones it would write. Returns the new catalog's path."""
    import shutil

    from catalogs.demo import generate_demo_library

    source = os.path.join(os.path.dirname(catalog), "audio")
    target = os.path.join(str(directory), "audio")
    os.makedirs(target, exist_ok=True)
    for name in os.listdir(source):
        if name.startswith("t") and int(name[1:6]) < n_tracks and not name.endswith(".part"):
            shutil.copy2(os.path.join(source, name), os.path.join(target, name))
    return generate_demo_library(str(directory), n_tracks=n_tracks)


def track_tiles(store_url: str, catalog: str | None = None) -> dict[tuple[str, str], np.ndarray]:
    """Every ok track's tiles, keyed by (catalog, track_id), read through the public API."""
    store = featurestore.open(store_url)
    tracks = store.tracks(catalog=catalog)
    tiles = store.tiles(tracks).compute()
    out = {}
    for key in tracks.loc[tracks["status"] == "ok", ["catalog", "track_id"]].itertuples(
            index=False):
        mask = (tiles["catalog"].values == key[0]) & (tiles["track_id"].values == key[1])
        out[tuple(key)] = tiles.values[mask]
    return out


def assert_same_build(got_url: str, expected_url: str, n_tracks: int, n_tiles: int) -> None:
    """Every ok track's tiles equal, tile for tile, and the feature statistics equal, over
    ``n_tiles`` tiles in both."""
    expected, got = track_tiles(expected_url), track_tiles(got_url)
    assert expected.keys() == got.keys() and len(got) == n_tracks
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    m1, s1, c1 = featurestore.open(expected_url).feature_set().statistics()
    m2, s2, c2 = featurestore.open(got_url).feature_set().statistics()
    assert c1 == c2 == n_tiles
    np.testing.assert_allclose(m2, m1, atol=1e-4)
    np.testing.assert_allclose(s2, s1, atol=1e-3)


def wait_for(predicate, timeout: float, what: str):
    """Poll ``predicate`` until it returns something true (returned), or raise TimeoutError
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError(what)


def cli(*args: str) -> list[str]:
    """The featurestore command as a subprocess argument list (same interpreter)."""
    return [sys.executable, "-m", "featurestore.cli", *args]


#: Runs the command line as ``python -m featurestore.cli`` does, then names every module the
#: process holds (``-X importtime`` misses those imported by ``importlib``, as entry points are).
_PROBE = """
import runpy, sys
sys.argv[0] = "featurestore"
try:
    runpy.run_module("featurestore.cli", run_name="__main__", alter_sys=True)
except SystemExit as done:
    print("MODULES", *sorted(sys.modules), file=sys.stderr)
    raise
"""


def cli_modules(*args: str):
    """Run the command in a subprocess: the finished process (a ``CompletedProcess``) and the
    names of the modules it had imported when it exited."""
    import subprocess

    res = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True,
                         text=True, timeout=120)
    line = next(x for x in res.stderr.splitlines() if x.startswith("MODULES "))
    return res, set(line.split()[1:])


def run_cli(capsys, *args: str):
    """The command line run in this process, ``featurestore.cli.main(args)`` (what the console
    script calls): its exit code and output, as a ``CompletedProcess``. Cheaper than
    :func:`cli` in a subprocess, which pays an interpreter start and its imports, and a
    LocalCluster start unless given ``--scheduler``; tests of the console script and its exit
    codes keep the subprocess."""
    import subprocess

    from featurestore.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["featurestore", *args], code, out, err)


def librosa_mfcc(y: np.ndarray, spec) -> np.ndarray:
    """The reference MFCC of ``y`` under a FeatureSpec ``spec``, computed by librosa."""
    import librosa

    kwargs = dict(sr=spec.sample_rate, n_mfcc=spec.n_mfcc, n_fft=spec.n_fft,
                  hop_length=spec.hop_length, n_mels=spec.n_mels, fmin=spec.fmin, fmax=spec.fmax)
    if spec.top_db == 80.0:  # librosa's own default: the plain call is the reference
        return librosa.feature.mfcc(y=y, **kwargs)[spec.drop_first:]
    mel = librosa.feature.melspectrogram(y=y, sr=spec.sample_rate, n_fft=spec.n_fft,
                                         hop_length=spec.hop_length, n_mels=spec.n_mels,
                                         fmin=spec.fmin, fmax=spec.fmax)
    S = librosa.power_to_db(mel, top_db=spec.top_db)
    return librosa.feature.mfcc(S=S, n_mfcc=spec.n_mfcc)[spec.drop_first:]


def codebook_by_hand(codebook, words: np.ndarray) -> np.ndarray:
    """A track's codebook embedding in numpy from the words of its frames: each word's share
    square-rooted, summed into the word's bucket with its sign, unit length."""
    shares = np.sqrt(np.bincount(words, minlength=len(codebook.words)) / len(words))
    folded = np.zeros(int(codebook.size))
    np.add.at(folded, codebook.bucket.numpy(), shares * codebook.sign.numpy())
    return folded / np.linalg.norm(folded)
