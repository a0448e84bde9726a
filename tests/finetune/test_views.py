"""Augmented views of the labeled slices: the rule, determinism, what is cached on disk, post-processing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct-tiny)
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.finetune import FinetuneConfig, finetune
from smp_diffusion_encoder.finetune.data import LabeledSlices, augmented_views, views_per_slice
from smp_diffusion_encoder.inference import PostprocessingConfig, load_model

WINDOW = (-160.0, 240.0)


def slices(n: int = 3) -> LabeledSlices:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 32, 32, generator=g) * 2 - 1
    labels = torch.zeros(n, 32, 32, dtype=torch.long)
    labels[:, 8:20, 8:20] = 1
    labels[:, 22:28, 22:28] = 13
    return LabeledSlices(images, labels, tuple(f"case:{z}" for z in range(n)))


def test_views_per_slice_rule() -> None:
    assert [views_per_slice(n) for n in (1, 4, 8, 16, 64, 500)] == [32, 32, 16, 8, 4, 4]
    with pytest.raises(ConfigError):
        views_per_slice(0)


def test_views_keep_the_slices_first_and_are_a_function_of_seed_id_and_k() -> None:
    base = slices()
    views = augmented_views(base, 4, "default", seed=1, hu_window=WINDOW)
    assert len(views) == 12 and views.ids[:3] == base.ids and views.ids[3] == "case:0#aug1"
    torch.testing.assert_close(views.images[:3], base.images)
    again = augmented_views(base, 4, "default", seed=1, hu_window=WINDOW)
    assert torch.equal(views.images, again.images) and torch.equal(views.labels, again.labels)
    fewer = augmented_views(base, 2, "default", seed=1, hu_window=WINDOW)  # copy k is the same whatever the count
    assert torch.equal(fewer.images[3:], views.images[3:6])
    other_seed = augmented_views(base, 4, "default", seed=2, hu_window=WINDOW)
    assert not torch.equal(other_seed.images[3:], views.images[3:])
    assert set(torch.unique(views.labels).tolist()) <= {0, 1, 13}
    assert augmented_views(base, 4, "none", seed=1, hu_window=WINDOW) is base
    with pytest.raises(ConfigError):
        augmented_views(base, 0, "default", seed=1, hu_window=WINDOW)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("phantom"), n_labeled=1, n_unlabeled=0, shape=(10, 48, 48))


@pytest.mark.parametrize("method", ["unet", "probe"])
def test_finetune_trains_on_views_caches_only_the_slices_and_records_postprocessing(
    root: Path, tmp_path: Path, method: str
) -> None:
    config = FinetuneConfig(
        method=method,
        encoder="ddpm-ct-tiny",
        budget="2",
        batch_size=2,
        steps=2,
        augment_views=3,
        largest_component=True,
        z_context_mm=3.0,
    )
    finetune(root, config, out_dir=tmp_path / "run", progress=False, cache_dir=tmp_path / "cache")
    settings = json.loads((tmp_path / "run" / "config.json").read_text())
    assert settings["views_per_slice"] == 3 and settings["augment"] == "default"
    cached = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(cached) == 2  # the two labeled slices; their 4 augmented copies stay in memory
    model = load_model(tmp_path / "run" / "model")
    assert model.postprocessing == PostprocessingConfig(largest_component=True, z_context_mm=3.0)
    default = FinetuneConfig()
    assert default.augment == "default" and default.augment_views is None
    assert np.isfinite(json.loads((tmp_path / "run" / "summary.json").read_text())["steps"])
