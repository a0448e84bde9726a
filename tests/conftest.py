"""Suite-wide settings: never touch the network, keep torch to the CPU cores we have."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture
def registry_snapshot():
    """Undo, after the test, every name or weights key it registered (our table and smp's registry)."""
    import segmentation_models_pytorch.encoders as smp_encoders

    from smp_diffusion_encoder.registry import records

    table, entries = dict(records._TABLE), dict(smp_encoders.encoders)
    yield
    records._TABLE.clear()
    records._TABLE.update(table)
    smp_encoders.encoders.clear()
    smp_encoders.encoders.update(entries)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """A tiny pretraining run folder (config.json + ema.safetensors) and its EMA weights."""
    from tests.training.run_helpers import write_run

    folder = tmp_path_factory.mktemp("runs") / "tiny"
    return folder, write_run(folder)
