"""Fixtures of the script tests: the training tests' slice store (40 slices, 64 px) and its volumes."""

from tests.training.conftest import store, volumes_dir

__all__ = ["store", "volumes_dir"]
