"""Shared fixtures: a 40-slice, 64 px slice store from two small phantom CTs."""

from __future__ import annotations

from pathlib import Path

import pytest

from smp_diffusion_encoder.data.phantom import generate_case, write_nifti
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.data.slice_store import build_slice_store

SPACING = (12.0, 6.0, 6.0)


@pytest.fixture(scope="session")
def volumes_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("volumes")
    for i in range(2):
        image, _ = generate_case(500 + i, shape=(20, 64, 64), spacing_mm=SPACING)
        write_nifti(root / f"vol{i}_0000.nii.gz", image, SPACING)
    return root


@pytest.fixture(scope="session")
def store(tmp_path_factory, volumes_dir) -> Path:
    out = tmp_path_factory.mktemp("store")
    build_slice_store(
        sorted(volumes_dir.glob("*.nii.gz")), out, PreprocessingConfig(image_size=64), workers=1, progress=False
    )
    return out
