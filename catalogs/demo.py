"""The demo film-score library: synthetic cues with film, composer, year and IMDB genres.

Each of the study's ten genres has an audible signature (timbre, rhythm, register): Action's fast
low ostinato and drums, Drama's slow bowed strings, Musical's sung vowels, and so on. A cue layers
the signatures of its film's genres, so a tagger can learn them, and the files come in mixed
formats, sample rates and channel counts, as real libraries do. Everything is seeded: the same
arguments give the same audio bytes' worth of signal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import scipy.signal
import soundfile as sf

from catalogs.writer import write_catalog

Synth = Callable[[np.random.Generator, int, float], np.ndarray]


def _t(sr: int, seconds: float) -> np.ndarray:
    return np.arange(int(sr * seconds)) / sr


def _envelope_hits(sr: int, seconds: float, bpm: float, decay: float, swing: float = 0.0,
                   rng: np.random.Generator | None = None, density: float = 1.0) -> np.ndarray:
    """A train of exponentially decaying hits on a beat grid."""
    n = int(sr * seconds)
    env = np.zeros(n)
    step = 60.0 / bpm
    length = int(sr * min(step * 4, decay * 6))
    shape = np.exp(-np.arange(length) / (decay * sr))
    beat = 0
    t = 0.0
    while t < seconds:
        if rng is None or rng.random() < density:
            i = int(t * sr)
            m = min(length, n - i)
            env[i:i + m] = np.maximum(env[i:i + m], shape[:m])
        beat += 1
        t = beat * step + (swing * step if beat % 2 else 0.0)
    return env


def _saw(freq: np.ndarray | float, t: np.ndarray, brightness: float = 1.0) -> np.ndarray:
    """A sawtooth (its harmonics give strings and brass their edge), softened by a one-pole
    low-pass as ``brightness`` drops below 1."""
    cycles = np.cumsum(np.broadcast_to(freq, t.shape)) * (t[1] - t[0])
    wave = 2.0 * (cycles % 1.0) - 1.0
    if brightness < 1.0:
        wave = scipy.signal.lfilter([brightness], [1.0, brightness - 1.0], wave)
    return wave


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal(n)


def _action(rng, sr, seconds):
    t = _t(sr, seconds)
    root = rng.choice([55.0, 61.7, 65.4])
    pattern = np.repeat(rng.choice([1, 1.5, 1.2, 2], 16), int(sr * 60 / 170 / 2) + 1)
    freq = root * np.resize(pattern, len(t))
    ostinato = _saw(freq, t) * _envelope_hits(sr, seconds, 340, 0.08)
    kick = np.sin(2 * np.pi * 50 * t) * _envelope_hits(sr, seconds, 170, 0.05)
    snare = _noise(rng, len(t)) * _envelope_hits(sr, seconds, 85, 0.04) * 0.6
    return ostinato * 0.5 + kick + snare


def _adventure(rng, sr, seconds):
    t = _t(sr, seconds)
    base = rng.choice([196.0, 220.0, 233.1])
    chord = sum(_saw(base * r, t, 0.5) for r in (1, 1.26, 1.5, 2))
    swell = 0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t)
    march = _envelope_hits(sr, seconds, 120, 0.12)
    cymbal = _noise(rng, len(t)) * _envelope_hits(sr, seconds, 30, 0.5) * 0.3
    return chord * swell * (0.5 + 0.5 * march) * 0.3 + cymbal


def _comedy(rng, sr, seconds):
    t = _t(sr, seconds)
    notes = rng.choice([660, 784, 880, 988, 1175, 1319], size=int(seconds * 5) + 1)
    freq = np.resize(np.repeat(notes, int(sr / 4.6) + 1), len(t))
    pluck = np.sin(2 * np.pi * np.cumsum(freq) / sr) * _envelope_hits(sr, seconds, 280, 0.03)
    bassoon = _saw(rng.choice([110.0, 146.8]), t, 0.2) * _envelope_hits(sr, seconds, 140, 0.06)
    return pluck + 0.4 * bassoon


def _crime(rng, sr, seconds):
    t = _t(sr, seconds)
    walk = rng.choice([82.4, 92.5, 98.0, 110.0, 123.5, 130.8], size=int(seconds * 2) + 1)
    freq = np.resize(np.repeat(walk, int(sr * 60 / 104) + 1), len(t))
    bass = (2 / np.pi) * np.arcsin(np.sin(2 * np.pi * np.cumsum(freq) / sr))
    bass *= _envelope_hits(sr, seconds, 104, 0.25)
    hat = np.diff(_noise(rng, len(t) + 1)) * _envelope_hits(sr, seconds, 208, 0.02, swing=0.33)
    muted = np.sin(2 * np.pi * 466 * t) * np.sin(2 * np.pi * 3 * t) ** 2 * 0.2
    return bass + 0.3 * hat + muted


def _drama(rng, sr, seconds):
    t = _t(sr, seconds)
    base = rng.choice([146.8, 164.8, 174.6])
    vibrato = 1 + 0.006 * np.sin(2 * np.pi * 5.5 * t)
    strings = sum(_saw(base * r * vibrato, t, 0.3) for r in (1, 1.2, 1.5))
    swell = 0.3 + 0.7 * np.sin(np.pi * t / max(seconds, 1)) ** 2 * (0.6 + 0.4 * np.sin(
        2 * np.pi * 0.1 * t))
    return strings * swell * 0.35


def _fantasy(rng, sr, seconds):
    t = _t(sr, seconds)
    out = np.zeros(len(t))
    tt = np.arange(int(1.2 * sr)) / sr
    bells = {}  # one waveform per pitch, shared by its strikes (a cue has hundreds)
    for start in np.arange(0, seconds, 0.18):
        f = rng.choice([1047, 1319, 1568, 2093, 1760])
        if f not in bells:
            bells[f] = sum(np.sin(2 * np.pi * f * p * tt) / (k + 1)
                           for k, p in enumerate((1.0, 2.76, 5.40, 8.93))) * np.exp(-tt * 3.0)
        i = int(start * sr)
        n = min(len(tt), len(t) - i)
        out[i:i + n] += bells[f][:n]
    shimmer = np.sin(2 * np.pi * 3136 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 7 * t)) * 0.1
    return out * 0.5 + shimmer


def _musical(rng, sr, seconds):
    t = _t(sr, seconds)
    melody = rng.choice([220, 247, 262, 294, 330, 349, 392], size=int(seconds * 2) + 1)
    f0 = np.resize(np.repeat(melody, int(sr / 2) + 1), len(t)) * (
        1 + 0.02 * np.sin(2 * np.pi * 6 * t))
    phase = np.cumsum(f0) / sr
    glottal = (phase % 1.0) ** 3 - 0.25  # pulse-like voice source
    vowels = [(730, 1090, 2440), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240)]
    out = np.zeros(len(t))
    seg = int(sr / 2)
    for j, i in enumerate(range(0, len(t), seg)):
        if j % 2 == 0:  # a vowel lasts two half-second notes
            formants = vowels[rng.integers(len(vowels))]
        sl = slice(i, min(i + seg, len(t)))
        harmonics = np.arange(1, 20)
        ff = f0[sl][:, None] * harmonics[None, :]
        gain = sum(1 / (1 + ((ff - fm) / (80 + 0.05 * fm)) ** 2) for fm in formants)
        out[sl] = (np.sin(2 * np.pi * phase[sl][:, None] * harmonics) * gain).sum(axis=1)
    piano = _envelope_hits(sr, seconds, 120, 0.2) * np.sin(2 * np.pi * 130.8 * t)
    return out * 0.3 + 0.3 * piano + 0.05 * glottal


def _romance(rng, sr, seconds):
    t = _t(sr, seconds)
    base = rng.choice([261.6, 293.7, 349.2])
    pad = sum(np.sin(2 * np.pi * base * r * t) for r in (1, 1.26, 1.5, 1.89))
    tremolo = 0.7 + 0.3 * np.sin(2 * np.pi * 0.8 * t)
    arpeggio = np.sin(2 * np.pi * base * 2 * t) * _envelope_hits(sr, seconds, 72, 0.4)
    return pad * tremolo * 0.25 + 0.3 * arpeggio


def _scifi(rng, sr, seconds):
    t = _t(sr, seconds)
    sweep = 200 * 2 ** (3 * (0.5 + 0.5 * np.sin(2 * np.pi * t / rng.uniform(3, 7))))
    fm = np.sin(2 * np.pi * np.cumsum(sweep) / sr + 4 * np.sin(2 * np.pi * sweep * 1.41 * t))
    ring = np.sin(2 * np.pi * 1200 * t) * np.sin(2 * np.pi * 37 * t)
    whoosh = np.convolve(_noise(rng, len(t)), np.ones(40) / 40, mode="same") * (
        0.5 + 0.5 * np.sin(2 * np.pi * 0.2 * t))
    return 0.5 * fm + 0.3 * ring + 2.0 * whoosh


def _thriller(rng, sr, seconds):
    t = _t(sr, seconds)
    drone = sum(_saw(f, t, 0.1) for f in (55.0, 58.3, 61.7)) * 0.25
    heart = np.sin(2 * np.pi * 45 * t) * (_envelope_hits(sr, seconds, 75, 0.06) +
                                          np.roll(_envelope_hits(sr, seconds, 75, 0.05),
                                                  int(0.25 * sr)))
    screech = np.sin(2 * np.pi * (2600 + 30 * np.sin(2 * np.pi * 11 * t)) * t) * (
        np.sin(2 * np.pi * t / 8) ** 8) * 0.3
    return drone + heart + screech


#: The audible signature of each of the study's ten genres.
SIGNATURES: dict[str, Synth] = {
    "Action": _action, "Adventure": _adventure, "Comedy": _comedy, "Crime": _crime,
    "Drama": _drama, "Fantasy": _fantasy, "Musical": _musical, "Romance": _romance,
    "Sci-Fi": _scifi, "Thriller": _thriller,
}

# Films: genres skewed as in the study (Drama most frequent, Drama+Romance the top pair); Dune
# Riders is the one whose cues fit "Thriller + Sci-Fi", the question the demo ends on.
FILMS: list[tuple[str, str, int, tuple[str, ...]]] = [
    ("Harbour Lights", "Ada Marsh", 1962, ("Drama", "Romance")),
    ("The Long Verdict", "Ennio Castellan", 1995, ("Crime", "Drama")),
    ("Tin Pan Avenue", "Irving Bloom", 1957, ("Comedy", "Musical")),
    ("Night Protocol", "Hanna Zimm", 2003, ("Drama", "Thriller")),
    ("Star Lancers", "John Wilde", 1999, ("Action", "Adventure", "Sci-Fi")),
    ("The Glass Orchard", "Rachel Pell", 1988, ("Fantasy", "Romance")),
    ("Mister Pennywhistle", "Danny Elf", 1984, ("Comedy",)),
    ("Cold Harbor Blues", "Ennio Castellan", 1972, ("Crime", "Thriller")),
    ("Dune Riders", "Hanna Zimm", 2010, ("Action", "Sci-Fi", "Thriller")),
    ("Summer in Verona", "Ada Marsh", 1978, ("Comedy", "Drama", "Romance")),
    ("The Crimson Quest", "John Wilde", 1993, ("Adventure", "Fantasy")),
    ("Broadway Nights", "Irving Bloom", 1965, ("Drama", "Musical", "Romance")),
    ("Deadline", "Rachel Pell", 2006, ("Action", "Crime", "Thriller")),
    ("The Clockwork Sky", "Danny Elf", 1996, ("Fantasy", "Sci-Fi")),
    ("Far Horizons", "Hanna Zimm", 2001, ("Action", "Adventure")),
    ("Quiet Rooms", "Ada Marsh", 1991, ("Drama",)),
]

# (extension, soundfile format, subtype, sample rate, channels): the mix of a real library.
FORMATS = [
    ("wav", "WAV", "PCM_16", 44100, 2),
    ("flac", "FLAC", "PCM_16", 48000, 2),
    ("mp3", "MP3", "MPEG_LAYER_III", 44100, 2),
    ("ogg", "OGG", "VORBIS", 32000, 1),
    ("wav", "WAV", "FLOAT", 22050, 1),
]


def synthesize(genres: tuple[str, ...] | list[str], seconds: float, sr: int,
               rng: np.random.Generator) -> np.ndarray:
    """A mono cue layering the signatures of ``genres``, peak-normalized to 0.8."""
    layers = []
    for genre in genres:
        layer = SIGNATURES[genre](rng, sr, seconds)
        layers.append(layer / (np.sqrt(np.mean(layer ** 2)) + 1e-9))
    mix = np.sum(layers, axis=0) + 0.01 * rng.standard_normal(int(sr * seconds))
    return (0.8 * mix / np.max(np.abs(mix))).astype(np.float32)


#: Threads that make cues at once, at most (a cue needs up to ~170 MiB while it is made).
_MAX_THREADS = 8


def _write_cue(path: str, genres: tuple[str, ...], seconds: float, rng: np.random.Generator,
               fmt: str, subtype: str, sr: int, channels: int) -> None:
    """Synthesize one cue and write it to ``path`` atomically (a partial file never has the
    final name, so an interrupted generation is finished by the next call)."""
    mono = synthesize(genres, seconds, sr, rng)
    data = mono if channels == 1 else np.stack([mono, np.roll(mono, int(0.01 * sr)) * 0.9],
                                               axis=1)
    tmp = path + ".part"
    sf.write(tmp, data, sr, format=fmt, subtype=subtype)
    os.replace(tmp, path)


def generate_demo_library(directory: str, n_tracks: int = 48, seed: int = 7,
                          min_seconds: float = 20.0, max_seconds: float = 45.0,
                          progress: bool = False) -> str:
    """Write the demo library into ``directory``: audio under ``audio/`` and ``catalog.csv``.

    Returns the catalog's path. Tracks cycle through :data:`FILMS` (so ``n_tracks=48`` gives
    three cues a film) and :data:`FORMATS`. Files already there with the same name are kept, so
    calling it again is cheap and does not touch their modification times. Missing cues are
    synthesized and encoded on a thread per core, at most :data:`_MAX_THREADS` (numpy and the
    encoders release the GIL); each cue has its own seed, so the audio is the same however many
    are made at once. With ``progress``, a progress bar counts them.
    """
    rng = np.random.default_rng(seed)
    audio_dir = os.path.join(directory, "audio")
    os.makedirs(audio_dir, exist_ok=True)
    rows, missing = [], []
    cues = ["Main Title", "Chase", "Love Theme", "Nocturne", "Finale", "Reprise", "Montage",
            "Arrival", "Confrontation", "Epilogue"]
    for i in range(n_tracks):
        film, composer, year, genres = FILMS[i % len(FILMS)]
        ext, fmt, subtype, sr, channels = FORMATS[i % len(FORMATS)]
        seconds = float(rng.uniform(min_seconds, max_seconds))
        name = f"t{i:05d}.{ext}"
        path = os.path.join(audio_dir, name)
        if not os.path.exists(path):
            missing.append((path, genres, seconds, np.random.default_rng([seed, i]), fmt,
                            subtype, sr, channels))
        rows.append({"track_id": f"t{i:05d}", "path": f"audio/{name}",
                     "title": f"{cues[i % len(cues)]} ({film})", "film": film,
                     "composer": composer, "year": year, "genres": "|".join(genres)})
    if missing:
        from tqdm.auto import tqdm

        pool = ThreadPoolExecutor(min(len(missing), os.cpu_count() or 1, _MAX_THREADS))
        try:
            with tqdm(total=len(missing), unit="cue", desc="generate demo",
                      disable=not progress) as bar:
                for done in as_completed([pool.submit(_write_cue, *cue) for cue in missing]):
                    done.result()
                    bar.update()
        finally:
            # on an error or Ctrl-C, the cues not yet started are dropped, not made first
            pool.shutdown(cancel_futures=True)
    return write_catalog(os.path.join(directory, "catalog.csv"), rows)
