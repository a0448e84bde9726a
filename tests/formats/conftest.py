"""Fixtures: a tiny encoder weights folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.hub.hub_helpers import write_tiny_weights


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("weights") / "ddpm-ct-tiny"
    return folder, write_tiny_weights(folder)
