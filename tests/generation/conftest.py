"""Fixtures: a tiny pretraining run folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from run_helpers import write_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("runs") / "tiny"
    return folder, write_run(folder)
