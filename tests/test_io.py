"""Atomic writers: outputs get the user's umask (not mkstemp's 0600), and nothing half-written is left."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from smp_diffusion_encoder._io import (
    atomic_path,
    atomic_write_json,
    check_name_fits,
    check_writable,
    current_umask,
    make_temp_dir,
    name_max,
    publish_file,
)
from smp_diffusion_encoder.errors import InputFileError


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


@pytest.mark.parametrize("keep_suffix", [False, True])
def test_longest_name_the_file_system_accepts_is_written(tmp_path: Path, keep_suffix: bool) -> None:
    """A 255-byte name (NAME_MAX on Linux) fits; the temporary beside it must fit too (it used to add 14)."""
    limit = name_max(tmp_path)
    target = tmp_path / ("é" * 20 + "x" * (limit - 40 - len(".nii.gz")) + ".nii.gz")
    assert len(os.fsencode(target.name)) == limit
    with atomic_path(target, keep_suffix=keep_suffix) as tmp:
        assert len(os.fsencode(tmp.name)) <= limit and tmp.name.startswith(".é")
        assert not keep_suffix or tmp.name.endswith(".gz")
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data" and [p.name for p in tmp_path.iterdir()] == [target.name]
    assert make_temp_dir(f".{target.name}.tmp-", tmp_path).parent == tmp_path


def test_a_name_too_long_is_refused_naming_the_input(tmp_path: Path) -> None:
    limit = name_max(tmp_path)
    check_name_fits(tmp_path / ("x" * limit))
    with pytest.raises(
        InputFileError,
        match=rf"^in/ct\.nii\.gz: its output file name 'x{{{limit + 1}}}' would be "
        rf"{limit + 1} bytes, more than the {limit} the file system of ",
    ):
        check_name_fits(tmp_path / "new" / ("x" * (limit + 1)), source="in/ct.nii.gz")


def test_publish_file_gives_the_umask_mode(tmp_path: Path, umask) -> None:
    umask(0o022)
    src = tmp_path / "private"
    src.write_bytes(b"w")
    os.chmod(src, 0o600)  # as safetensors writes its files
    publish_file(src, tmp_path / "model.safetensors")
    assert mode(tmp_path / "model.safetensors") == 0o644 and not src.exists()


def test_check_writable(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "deeper")  # does not exist yet: its existing ancestor is writable
    check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing behind
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputFileError, match=r"out: cannot be written: .*file is a file, not a folder"):
        check_writable(tmp_path / "file" / "out")
    if os.geteuid() != 0:  # root may write into a read-only folder (not onto a read-only file system)
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(InputFileError, match=r"ro/out: cannot be written \(Permission denied in .*ro\)"):
            check_writable(tmp_path / "ro" / "out")
