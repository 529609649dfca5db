"""Every kind of bad audio gets its own status and reason; the rest of the library builds."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import soundfile as sf

import featurestore
from tests.conftest import cli, small_library, track_tiles, write_audio, write_catalog


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
    return out


def test_bad_tracks_recorded_rest_built_exit_code_4(tmp_path):
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
    tracks = featurestore.open(store).tracks().set_index("track_id")
    for track_id, (_, status) in bad.items():
        assert tracks.loc[track_id, "status"] == status, (track_id, tracks.loc[track_id, "error"])
        assert tracks.loc[track_id, "error"], track_id
        assert tracks.loc[track_id, "n_tiles"] == 0
        assert f"FAILED {track_id}: {status}" in res.stdout
    assert "NaN or infinite sample at frame 5000" in tracks.loc["nan", "error"]
    assert "constant signal" in tracks.loc["dc", "error"]
    assert "digital silence" in tracks.loc["silent", "error"]
    assert "truncated" in tracks.loc["truncated", "error"] or "decod" in tracks.loc[
        "truncated", "error"]
    assert (tracks.loc[["s000", "s001", "s002"], "status"] == "ok").all()
    good = track_tiles(store)

    # Rerun: failures of unchanged files are not retried, stay reported, nothing else moves.
    res2 = subprocess.run(cli("build", catalog, "--store", store, "--workers", "1",
                              "--no-progress"), capture_output=True, text=True, timeout=300)
    assert res2.returncode == 4
    assert "0 extracted" in res2.stdout
    # Fix one broken file: only it is rebuilt, and it turns ok.
    write_audio(bad["zero"][0], 12.0, seed=8)
    report = featurestore.build(catalog, store, n_workers=1, progress=False)
    assert report.built == 1
    tracks = featurestore.open(store).tracks().set_index("track_id")
    assert tracks.loc["zero", "status"] == "ok"
    after = track_tiles(store)
    for key, tiles in good.items():
        np.testing.assert_array_equal(after[key], tiles)
