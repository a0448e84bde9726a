"""Post-processing after the 2D model: z context in mm, largest components (paired, tubular), model folders."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.inference import (
    PostprocessingConfig,
    Segmenter,
    keep_largest_components,
    predict_volume,
    read_postprocessing,
    smooth_along_z,
    write_postprocessing,
)


def test_smooth_along_z_weights_in_mm_and_edges() -> None:
    p = np.zeros((5, 2, 1, 1), np.float32)
    p[:, 0] = 1.0
    p[2] = [[[0.0]], [[1.0]]]  # one slice votes class 1
    out = smooth_along_z(p, spacing_mm=2.0, distance_mm=2.0, weight=0.25)
    assert out[2, 1, 0, 0] == pytest.approx(0.5)  # (1 - 2w) * 1
    assert out[1, 1, 0, 0] == pytest.approx(0.25)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    # at the first slice only one neighbour exists: weights renormalized (0.5 + 0.25 -> /0.75)
    assert out[0, 0, 0, 0] == pytest.approx(1.0)
    # 1 mm on 2 mm slices: half-way neighbours, linearly interpolated
    half = smooth_along_z(p, spacing_mm=2.0, distance_mm=1.0, weight=0.25)
    assert half[1, 1, 0, 0] == pytest.approx(0.25 * 0.5 / 1.0)
    np.testing.assert_array_equal(smooth_along_z(p, 2.0, 0.0), p)
    with pytest.raises(ConfigError):
        smooth_along_z(p[0], 2.0, 2.0)


def test_largest_component_rules_for_solid_paired_and_tubular_organs() -> None:
    labels = np.zeros((6, 20, 20), np.uint8)
    labels[:, 2:8, 2:8] = 1  # liver
    labels[2, 15:17, 15:17] = 1  # a liver speck far away: removed
    labels[:, 10:13, 2:5] = 2  # right kidney
    labels[:, 10:13, 15:18] = 13  # left kidney: its own label, kept whole
    labels[0:2, 16:18, 8:10] = 5  # aorta, cut by a missed slice at z=2 ...
    labels[3:6, 16:18, 8:10] = 5  # ... both parts are large: kept
    labels[5, 0, 19] = 5  # a one-voxel aorta speck: < 20% of the largest part, removed
    out = keep_largest_components(labels)
    assert out[2, 15, 15] == 0 and (out[:, 2:8, 2:8] == 1).all()
    assert (out[:, 10:13, 2:5] == 2).all() and (out[:, 10:13, 15:18] == 13).all()
    assert (out[0:2, 16:18, 8:10] == 5).all() and (out[3:6, 16:18, 8:10] == 5).all()
    assert out[5, 0, 19] == 0
    np.testing.assert_array_equal(labels[labels != out], [1, 1, 1, 1, 5])  # only those voxels changed
    with pytest.raises(ConfigError):
        keep_largest_components(labels[0])


def test_config_round_trip_checks_and_description() -> None:
    cfg = PostprocessingConfig(largest_component=True, z_context_mm=3.0)
    assert PostprocessingConfig.from_dict(cfg.to_dict()) == cfg and cfg.needs_volume
    assert not PostprocessingConfig().needs_volume and PostprocessingConfig().describe() == "none"
    assert "3 mm" in cfg.describe() and "largest" in cfg.describe()
    with pytest.raises(ConfigError, match="unknown postprocessing keys"):
        PostprocessingConfig.from_dict({"lcc": True})
    with pytest.raises(ConfigError, match="z_context_mm"):
        PostprocessingConfig(z_context_mm=-1.0)
    with pytest.raises(ConfigError, match="z_context_weight"):
        PostprocessingConfig(z_context_weight=0.5)
    for bad in ({"z_context_mm": "x"}, {"z_context_mm": None}, {"z_context_weight": True}):  # a hand-edited file
        with pytest.raises(ConfigError, match="must be a number"):
            PostprocessingConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="true or false"):
        PostprocessingConfig.from_dict({"largest_component": "yes"})


def test_model_folder_records_postprocessing(tmp_path) -> None:
    assert read_postprocessing(tmp_path) == PostprocessingConfig()  # folders from before it existed
    cfg = PostprocessingConfig(largest_component=True)
    write_postprocessing(tmp_path, cfg)
    assert read_postprocessing(tmp_path) == cfg
    (tmp_path / "postprocessing.json").write_text(json.dumps({"z_context_mm": "far"}))
    with pytest.raises((WeightsError, TypeError)):
        read_postprocessing(tmp_path)


class _Speckle(torch.nn.Module):
    """Predicts class 1 in a block, plus a one-pixel class-1 speck on slice 1 only (logits over 3 classes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        logits = torch.zeros(b, 3, h, w)
        logits[:, 0] = 1.0
        logits[:, 1, h // 4 : h // 2, w // 4 : w // 2] = 5.0
        speck = x[:, 0, 0, 0] > 0.5  # the test marks slice 1 with a bright corner
        logits[speck, 1, h - 3, w - 3] = 5.0
        return logits


def test_predict_volume_applies_the_models_postprocessing(tmp_path) -> None:
    from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig

    array = np.full((32, 32, 3), -100, np.int16)  # file order (x, y, z)
    array[28:, 28:, :] = -1000  # air, so it reads as CT
    nib.save(nib.Nifti1Image(array, np.diag([-1.0, -1.0, 3.0, 1.0])), tmp_path / "v.nii.gz")
    volume = read_volume(tmp_path / "v.nii.gz")
    volume.array[1, 0, 0] = 1000  # a bright corner on slice 1 triggers the speck
    prep = PreprocessingConfig(image_size=32, spacing_mm=None)
    plain = Segmenter(_Speckle(), prep, 3, "smp", tmp_path)
    raw = predict_volume(plain, volume, device="cpu", precision="fp32")
    assert (raw.labels == 1).sum(axis=(1, 2))[1] > (raw.labels == 1).sum(axis=(1, 2))[0]  # the speck is there
    lcc = Segmenter(_Speckle(), prep, 3, "smp", tmp_path, PostprocessingConfig(largest_component=True))
    cleaned = predict_volume(lcc, volume, device="cpu", precision="fp32")
    assert (cleaned.labels == 1).sum(axis=(1, 2)).tolist() == [(raw.labels[0] == 1).sum()] * 3
    only = predict_volume(lcc, volume, device="cpu", precision="fp32", slices=[1])
    np.testing.assert_array_equal(only.labels[0], cleaned.labels[1])  # a subset comes from the whole volume
    override = predict_volume(lcc, volume, device="cpu", precision="fp32", postprocessing=PostprocessingConfig())
    np.testing.assert_array_equal(override.labels, raw.labels)
