import pytest
import torch

from smp_diffusion_encoder.models import DiffusionUNet


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fresh U-Nets zero-initialise their residual outputs; perturb every weight so tests can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module


@pytest.fixture
def tiny_unet() -> DiffusionUNet:
    return randomize_(DiffusionUNet("tiny")).eval()
