"""Slice store: content, air-slice skipping, resume after SIGKILL, config mismatch, bad volumes, DataLoader."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from smp_diffusion_encoder.data.phantom import generate_case, write_nifti
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig, volume_to_model_slices
from smp_diffusion_encoder.data.slice_store import MANIFEST, SliceStore, body_slices, build_slice_store
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.errors import InputFileError

CFG = PreprocessingConfig(image_size=32)
SPACING = (12.0, 6.0, 6.0)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> list[Path]:
    """Six small phantom CTs (20x64x64); the first has 3 all-air slices added on top."""
    root = tmp_path_factory.mktemp("vols")
    paths = []
    for i in range(6):
        image, _ = generate_case(100 + i, shape=(20, 64, 64), spacing_mm=SPACING)
        if i == 0:
            image = np.concatenate([image, np.full((3, 64, 64), -1000, np.int16)])
        paths.append(write_nifti(root / f"vol{i}_0000.nii.gz", image, SPACING))
    return paths


def _contents(store_dir: Path) -> tuple[list, list[np.ndarray]]:
    manifest = json.loads((store_dir / MANIFEST).read_text())
    keys = [(s["source"], s["file"], s["n_slices"], s["z"], s["size"]) for s in manifest["shards"]]
    return keys, [np.load(store_dir / s["file"]) for s in manifest["shards"]]


def test_store_matches_preprocessing_and_skips_air(tmp_path, volumes) -> None:
    manifest = build_slice_store(volumes[:2], tmp_path / "s", CFG, workers=1, progress=False)
    assert manifest["complete"] and manifest["preprocessing"] == CFG.to_dict() and manifest["bad"] == []
    assert [s["n_input_slices"] for s in manifest["shards"]] == [23, 20]
    first = manifest["shards"][0]
    assert first["z"] == list(range(20)) and first["n_slices"] == 20  # the 3 air slices are dropped
    expected = volume_to_model_slices(read_volume(volumes[0]), CFG)[:20]
    store = SliceStore(tmp_path / "s")
    assert len(store) == 40 and store.locate(21) == (str(volumes[1].resolve()), 1)
    item = store[3]
    assert item.dtype == torch.float32 and item.shape == (1, 32, 32)
    np.testing.assert_allclose(item[0].numpy(), expected[3], atol=2e-3)  # float16 storage
    assert body_slices(np.full((2, 8, 8), -1.0, np.float32)).size == 0
    with pytest.raises(IndexError):
        store[40]


def test_parallel_build_equals_serial_and_reruns_are_noops(tmp_path, volumes) -> None:
    build_slice_store(volumes, tmp_path / "serial", CFG, workers=1, progress=False)
    build_slice_store(volumes, tmp_path / "par", CFG, workers=2, progress=False)
    (k1, a1), (k2, a2) = _contents(tmp_path / "serial"), _contents(tmp_path / "par")
    assert k1 == k2 and all(np.array_equal(x, y) for x, y in zip(a1, a2))
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "par" / "shards").iterdir()}
    build_slice_store(volumes, tmp_path / "par", CFG, workers=2, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "par" / "shards").iterdir()} == mtimes


_KILLABLE = """
import sys, time
from pathlib import Path
import smp_diffusion_encoder.data.slice_store as ss
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
slow_read = ss.read_volume
def read_volume(*args, **kwargs):  # slow the build down so the test can kill it mid-way
    time.sleep(0.4)
    return slow_read(*args, **kwargs)
ss.read_volume = read_volume
ss.build_slice_store(sys.argv[2:], sys.argv[1], PreprocessingConfig(image_size=32), workers=1, progress=False)
"""


def test_resume_after_sigkill_equals_uninterrupted_build(tmp_path, volumes) -> None:
    script = tmp_path / "build.py"
    script.write_text(textwrap.dedent(_KILLABLE))
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(out), *map(str, volumes)])
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            manifest = out / MANIFEST
            if manifest.exists() and json.loads(manifest.read_text())["shards"]:
                break
            assert proc.poll() is None, "the build ended before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = json.loads((out / MANIFEST).read_text())
    assert not partial["complete"] and 1 <= len(partial["shards"]) < len(volumes)
    build_slice_store(volumes, out, CFG, workers=1, progress=False)
    build_slice_store(volumes, tmp_path / "clean", CFG, workers=1, progress=False)
    (k1, a1), (k2, a2) = _contents(out), _contents(tmp_path / "clean")
    assert k1 == k2 and all(np.array_equal(x, y) for x, y in zip(a1, a2))
    assert not [p for p in (out / "shards").iterdir() if p.name.startswith(".")]


def test_other_config_refused_unless_overwrite(tmp_path, volumes) -> None:
    build_slice_store(volumes[:1], tmp_path / "s", CFG, workers=1, progress=False)
    other = PreprocessingConfig(hu_window=(-200.0, 300.0), image_size=32)
    with pytest.raises(InputFileError, match=r"manifest\.json.*other settings.*hu_window.*overwrite"):
        build_slice_store(volumes[:1], tmp_path / "s", other, workers=1, progress=False)
    manifest = build_slice_store(volumes[:1], tmp_path / "s", other, workers=1, overwrite=True, progress=False)
    assert manifest["preprocessing"]["hu_window"] == [-200.0, 300.0]
    assert len(list((tmp_path / "s" / "shards").glob("*.npy"))) == 1


def test_bad_volume_named_or_skipped(tmp_path, volumes) -> None:
    bad = tmp_path / "broken_0000.nii.gz"
    bad.write_bytes(volumes[0].read_bytes()[:3000])  # truncated gzip
    with pytest.raises(InputFileError, match="broken_0000.nii.gz") as err:
        build_slice_store([volumes[0], bad, volumes[1]], tmp_path / "s", CFG, workers=1, progress=False)
    assert type(err.value).__name__ == "CorruptFileError"
    manifest = build_slice_store(
        [volumes[0], bad, volumes[1]], tmp_path / "s", CFG, workers=1, skip_bad=True, progress=False
    )
    assert [b["source"] for b in manifest["bad"]] == [str(bad.resolve())]
    assert "CorruptFileError" in manifest["bad"][0]["error"] and len(manifest["shards"]) == 2
    assert manifest["complete"]


def test_dataloader_with_two_workers_streams_all_slices(tmp_path, volumes) -> None:
    build_slice_store(volumes[:2], tmp_path / "s", CFG, workers=1, progress=False)
    store = SliceStore(tmp_path / "s")
    first = store[0]  # memory-maps a shard; pickling must not carry it along
    assert len(pickle.dumps(store)) < 20_000
    torch.testing.assert_close(pickle.loads(pickle.dumps(store))[0], first)
    loader = DataLoader(store, batch_size=8, num_workers=2, shuffle=False)
    batches = list(loader)
    assert sum(b.shape[0] for b in batches) == len(store) == 40
    np.testing.assert_array_equal(torch.cat(batches)[17].numpy(), store[17].numpy())
    with pytest.raises(InputFileError, match="manifest"):
        SliceStore(tmp_path / "nothing")


def test_load_all_holds_every_item_in_float16(tmp_path, volumes) -> None:
    build_slice_store(volumes[:2], tmp_path / "s", CFG, workers=1, progress=False)
    store = SliceStore(tmp_path / "s")
    everything = store.load_all()
    assert everything.shape == (len(store), 1, 32, 32) and everything.dtype == torch.float16
    for i in (0, 17, len(store) - 1):  # float16 -> float32 is exact: the same values as the items
        assert torch.equal(everything[i].float(), store[i])
