"""Atomic file writing: a reader never sees a half-written file, even if the writer is killed.

Files and folders made here get the permissions any ordinary ``open``/``mkdir`` would give them under the
user's umask (``0644``/``0755`` under umask ``022``), not the private ``0600``/``0700`` of :mod:`tempfile`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from smp_diffusion_encoder.errors import CorruptFileError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    On any exception (or if the process dies) ``path`` is untouched and the temporary file is removed
    (or left as an obviously temporary ``.<name>.tmp-*`` file that is never mistaken for output). The file
    gets mode ``0666`` less the umask, like a file made with ``open(path, "w")``. ``keep_suffix=True`` ends
    the temporary name with ``path``'s last suffix, for writers that choose the format by it.

    Example:
        >>> with atomic_path("out.json") as tmp:          # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.tmp-", suffix=path.suffix if keep_suffix else "", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def make_temp_dir(prefix: str, parent: str | os.PathLike[str]) -> Path:
    """A new uniquely named folder in ``parent`` (for files renamed into place one by one), with mode
    ``0777`` less the umask like ``mkdir`` gives, not :func:`tempfile.mkdtemp`'s ``0700``."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(folder, 0o777 & ~current_umask())
    return folder


def current_umask() -> int:
    """The process umask, read from ``/proc/self/status`` where it is there (Linux 4.7+) so that it is not
    changed even for a moment; elsewhere set and restored with :func:`os.umask`."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json_object(
    path: str | os.PathLike[str], make_error: Callable[[str], Exception] | None = None
) -> dict[str, Any]:
    """Parse the JSON object in ``path``. Any problem (missing, unreadable, not JSON, not an object) raises
    ``make_error(problem)``; by default a :class:`CorruptFileError` naming ``path``."""
    path = Path(path)
    make = make_error or (lambda problem: CorruptFileError(path, problem))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise make("does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise make(f"is not readable JSON ({err})") from err
    if not isinstance(data, dict):
        raise make("is not a JSON object")
    return data


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
