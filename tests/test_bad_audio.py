"""Every kind of bad audio gets its own status and reason; the rest of the library builds."""

from __future__ import annotations

import os
import subprocess

import librosa
import numpy as np
import soundfile as sf

import featurestore
from catalogs.writer import write_catalog
from featurestore.spec import FeatureSpec
from featurestore.tiles import count_tiles, cut_tiles
from tests.helpers import (cli, librosa_mfcc, run_cli, small_library, tone, track_tiles,
                           write_audio)


def make_bad_files(d) -> dict[str, tuple[str, str]]:
    """Write one file of each bad kind; return {track_id: (path, expected status)}."""
    d = str(d)
    os.makedirs(d, exist_ok=True)
    out = {}
    out["missing"] = (os.path.join(d, "missing.wav"), "missing")
    open(os.path.join(d, "zero.wav"), "wb").close()
    out["zero"] = (os.path.join(d, "zero.wav"), "empty")
    with open(os.path.join(d, "text.wav"), "w") as f:
        f.write("this is not audio, only words\n" * 50)
    out["text"] = (os.path.join(d, "text.wav"), "not_audio")
    with open(os.path.join(d, "random.flac"), "wb") as f:
        f.write(np.random.default_rng(0).bytes(50_000))
    out["random"] = (os.path.join(d, "random.flac"), "not_audio")
    full = write_audio(os.path.join(d, "full.flac"), 30.0, 44100, 2)
    data = open(full, "rb").read()
    with open(os.path.join(d, "truncated.flac"), "wb") as f:
        f.write(data[: len(data) // 3])
    out["truncated"] = (os.path.join(d, "truncated.flac"), "corrupt")
    # a PCM WAV cut short: libsndfile decodes what is there without complaint
    data = open(write_audio(os.path.join(d, "full.wav"), 30.0, 22050, 1), "rb").read()
    with open(os.path.join(d, "truncated.wav"), "wb") as f:
        f.write(data[: len(data) * 6 // 10])
    out["truncated_wav"] = (os.path.join(d, "truncated.wav"), "corrupt")
    data = open(write_audio(os.path.join(d, "full.mp3"), 30.0, 44100, 2), "rb").read()
    with open(os.path.join(d, "truncated.mp3"), "wb") as f:
        f.write(data[: len(data) // 2])
    out["truncated_mp3"] = (os.path.join(d, "truncated.mp3"), "corrupt")
    with open(os.path.join(d, "random.mp3"), "wb") as f:
        f.write(np.random.default_rng(1).bytes(40_000))
    out["random_mp3"] = (os.path.join(d, "random.mp3"), "not_audio")
    y = np.zeros(22050 * 12, dtype=np.float32)
    y[5000] = np.nan
    sf.write(os.path.join(d, "nan.wav"), y, 22050, subtype="FLOAT")
    out["nan"] = (os.path.join(d, "nan.wav"), "invalid_samples")
    y = np.full(22050 * 12, 0.1, dtype=np.float32)
    y[7] = np.inf
    sf.write(os.path.join(d, "inf.wav"), y, 22050, subtype="FLOAT")
    out["inf"] = (os.path.join(d, "inf.wav"), "invalid_samples")
    sf.write(os.path.join(d, "silent.wav"), np.zeros(22050 * 12, dtype=np.int16), 22050)
    out["silent"] = (os.path.join(d, "silent.wav"), "silent")
    sf.write(os.path.join(d, "dc.wav"), np.full(22050 * 12, 0.25, dtype=np.float32), 22050,
             subtype="FLOAT")
    out["dc"] = (os.path.join(d, "dc.wav"), "silent")
    out["short"] = (write_audio(os.path.join(d, "short.ogg"), 0.5, 44100), "too_short")
    os.makedirs(os.path.join(d, "a-folder.wav"))
    out["folder"] = (os.path.join(d, "a-folder.wav"), "not_audio")
    return out


def test_bad_tracks_recorded_rest_built_exit_code_4(tmp_path, dask_client, capsys):
    lib_dir = tmp_path / "lib"
    small_library(lib_dir, n=3, seconds=12.0)
    bad = make_bad_files(lib_dir / "bad")
    rows = [{"track_id": f"s{i:03d}", "path": f"audio/s{i:03d}.wav", "genres": "Drama"}
            for i in range(3)]
    rows += [{"track_id": k, "path": p, "genres": "Drama"} for k, (p, _) in bad.items()]
    catalog = write_catalog(lib_dir / "catalog.csv", rows)
    store = str(tmp_path / "store")
    res = subprocess.run(cli("build", catalog, "--store", store, "--workers", "2",
                             "--no-progress"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 4, res.stdout + res.stderr
    assert f"3 extracted, {len(bad)} failed" in res.stdout, res.stdout
    assert f"{len(bad)} tracks have no tiles" in res.stdout
    tracks = featurestore.open(store).tracks().set_index("track_id")
    for track_id, (_, status) in bad.items():
        assert tracks.loc[track_id, "status"] == status, (track_id, tracks.loc[track_id, "error"])
        assert tracks.loc[track_id, "error"], track_id
        assert tracks.loc[track_id, "n_tiles"] == 0
        assert f"FAILED {track_id}: {status}" in res.stdout
    assert "NaN or infinite sample at frame 5000" in tracks.loc["nan", "error"]
    assert "constant signal" in tracks.loc["dc", "error"]
    assert "digital silence" in tracks.loc["silent", "error"]
    assert tracks.loc["folder", "error"] == f"a folder, not an audio file: {bad['folder'][0]}"
    assert "truncated" in tracks.loc["truncated", "error"] or "decod" in tracks.loc[
        "truncated", "error"]
    assert "truncated: the file holds" in tracks.loc["truncated_wav", "error"]
    assert (tracks.loc[["s000", "s001", "s002"], "status"] == "ok").all()
    good = track_tiles(store)

    # Rerun: failures of unchanged files are not retried, stay reported, nothing else moves.
    res2 = run_cli(capsys, "build", catalog, "--store", store, "--scheduler",
                   dask_client.scheduler.address, "--no-progress")
    assert res2.returncode == 4
    assert "0 extracted, 0 failed" in res2.stdout and f"{3 + len(bad)} skipped" in res2.stdout
    assert f"{len(bad)} tracks have no tiles" in res2.stdout
    # Fix one broken file: only it is rebuilt, and it turns ok.
    write_audio(bad["zero"][0], 12.0, seed=8)
    report = featurestore.build(catalog, store, client=dask_client, progress=False)
    assert (report.built, report.failed, len(report.failures)) == (1, 0, len(bad) - 1)
    tracks = featurestore.open(store).tracks().set_index("track_id")
    assert tracks.loc["zero", "status"] == "ok"
    after = track_tiles(store)
    for key, tiles in good.items():
        np.testing.assert_array_equal(after[key], tiles)


def _write_long_wav(path: str, minutes: float, sr: int = 22050) -> None:
    """A long tone written block by block, so the test itself stays small in memory."""
    with sf.SoundFile(path, "w", sr, 1, "PCM_16") as f:
        for i in range(int(minutes * 60 / 30)):
            f.write(tone(30.0, sr, seed=i))


def test_unusual_but_valid_audio_builds_exactly(tmp_path, dask_client, capsys):
    """8 channels, 8 kHz, 96 kHz, a 60-minute track, unicode and spaces in the path: each builds
    to librosa's MFCC of ``librosa.load(mono, 22,050 Hz)``; a file listed twice is built once
    and its second row is reported as a duplicate."""
    d = tmp_path / "lib dir ünïcode"
    (d / "audio").mkdir(parents=True)
    files = {
        "ch8": write_audio(d / "audio" / "eight channels.flac", 20.0, 44100, 8, seed=1),
        "sr8k": write_audio(d / "audio" / "telephone 8k.wav", 20.0, 8000, 1, seed=2),
        "sr96k": write_audio(d / "audio" / "hi-res 96k.wav", 20.0, 96000, 2, seed=3),
        "unicode": write_audio(d / "audio" / "Überture — Main Title (ñ) 第一.wav", 20.0,
                               22050, 1, seed=4),
    }
    long_path = str(d / "audio" / "sixty minutes.wav")
    _write_long_wav(long_path, 60.0)
    rows = [{"track_id": k, "path": os.path.relpath(p, d), "genres": "Drama"}
            for k, p in files.items()]
    rows += [{"track_id": "long", "path": "audio/sixty minutes.wav", "genres": "Drama"},
             {"track_id": "again", "path": os.path.relpath(files["unicode"], d),
              "genres": "Comedy"}]
    catalog = write_catalog(d / "catalog.csv", rows)
    store = str(tmp_path / "store")
    res = run_cli(capsys, "build", catalog, "--store", store, "--scheduler",
                  dask_client.scheduler.address, "--no-progress")
    assert res.returncode == 4, res.stdout + res.stderr
    assert "FAILED again: duplicate: same file as track 'unicode'" in res.stdout
    assert "6 tracks: 5 extracted, 1 failed, 0 touched but unchanged, 0 skipped" in res.stdout
    assert "1 track has no tiles" in res.stdout
    tracks = featurestore.open(store).tracks().set_index("track_id")
    assert tracks.loc["again", "status"] == "duplicate" and tracks.loc["again", "n_tiles"] == 0
    assert tracks.loc["ch8", "channels"] == 8
    assert list(tracks.loc[["sr8k", "sr96k"], "source_rate"]) == [8000, 96000]
    spec = FeatureSpec()
    assert tracks.loc["long", "status"] == "ok"
    assert tracks.loc["long", "n_tiles"] == count_tiles(spec.n_frames(3600 * 22050), spec) == 387
    got = track_tiles(store)
    for track_id, path in files.items():
        assert tracks.loc[track_id, "status"] == "ok", tracks.loc[track_id, "error"]
        y, _ = librosa.load(path, sr=spec.sample_rate, mono=True, res_type="soxr_hq")
        expected = cut_tiles(librosa_mfcc(y, spec), spec)
        assert got[("catalog", track_id)].shape == expected.shape == (2, 40, 100)
        np.testing.assert_allclose(got[("catalog", track_id)], expected, atol=2e-3, rtol=0)

    # The duplicate row gets built once its first listing leaves the catalog.
    write_catalog(catalog, rows[-1:])
    report = featurestore.build(catalog, store, client=dask_client, progress=False)
    assert report.built == 1 and report.exit_code == 0
    tracks = featurestore.open(store).tracks().set_index("track_id")
    assert tracks.loc["again", "status"] == "ok"
    np.testing.assert_array_equal(track_tiles(store)[("catalog", "again")],
                                  got[("catalog", "unicode")])
