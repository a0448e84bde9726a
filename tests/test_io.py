"""Atomic writers: outputs get the user's umask (not mkstemp's 0600), and nothing half-written is left."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from smp_diffusion_encoder._io import atomic_path, atomic_write_json, current_umask, make_temp_dir


@pytest.fixture
def umask() -> Iterator[callable]:
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_files_respect_the_umask(tmp_path: Path, umask, mask: int, expected: int) -> None:
    umask(mask)
    assert current_umask() == mask
    atomic_write_json(tmp_path / "metrics.json", {"a": 1})
    assert mode(tmp_path / "metrics.json") == expected
    # the same as a file made the ordinary way
    (tmp_path / "plain.txt").write_text("x")
    assert mode(tmp_path / "plain.txt") == expected


def test_replacing_a_file_keeps_umask_mode(tmp_path: Path, umask) -> None:
    umask(0o022)
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and mode(target) == 0o644


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_temp_dir_respects_the_umask(tmp_path: Path, umask) -> None:
    umask(0o022)
    folder = make_temp_dir(".x.tmp-", tmp_path)
    assert folder.parent == tmp_path and folder.name.startswith(".x.tmp-") and mode(folder) == 0o755
