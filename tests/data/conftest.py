"""Shared fixtures for data tests. Other helpers may append fixtures below; keep existing names stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.synthetic_volumes import PERMUTED_AFFINE, synthetic_ct, synthetic_labels, write_nifti


@pytest.fixture
def ct_nifti(tmp_path: Path) -> Path:
    """A valid 24x20x8 CT NIfTI (int16 HU) with a flipped/permuted affine."""
    return write_nifti(tmp_path / "ct_0000.nii.gz", synthetic_ct(), PERMUTED_AFFINE)


@pytest.fixture
def label_nifti(tmp_path: Path) -> Path:
    """Labels matching :func:`ct_nifti`'s grid."""
    return write_nifti(tmp_path / "ct.nii.gz", synthetic_labels(), PERMUTED_AFFINE)
