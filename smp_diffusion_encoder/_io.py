"""Atomic file writing: a reader never sees a half-written file, even if the writer is killed.

Files and folders made here get the permissions any ordinary ``open``/``mkdir`` would give them under the
user's umask (``0644``/``0755`` under umask ``022``), not the private ``0600``/``0700`` of :mod:`tempfile`.
Temporary names are never longer than the final name's folder allows (``NAME_MAX``, 255 bytes on Linux), and
:func:`check_name_fits` / :func:`check_writable` let a command refuse an output before its work, not after.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from smp_diffusion_encoder.errors import CorruptFileError, InputFileError

#: Bytes of a temporary name beyond its prefix and suffix: ``mkstemp``'s 8 random characters.
_RANDOM_CHARS = 8


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
    suffix = path.suffix if keep_suffix else ""
    fd, tmp_name = tempfile.mkstemp(
        prefix=_temp_prefix(path.name, suffix, name_max(path.parent)), suffix=suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        publish_file(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def publish_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Give the finished file ``src`` mode ``0666`` less the umask, fsync it and rename it onto ``dst`` (same
    file system). Writers that make their own file (safetensors writes through a private ``0600`` temporary)
    end up with the umask's mode like every other output."""
    with open(src, "rb+") as fh:
        os.fchmod(fh.fileno(), 0o666 & ~current_umask())
        os.fsync(fh.fileno())
    os.replace(src, dst)
    _fsync_dir(Path(dst).parent)


def name_max(folder: str | os.PathLike[str]) -> int:
    """The longest file name (bytes) the file system of ``folder`` (or of its nearest existing ancestor)
    accepts; 255 where the system does not say."""
    base = _existing_ancestor(Path(folder))
    try:
        return int(os.pathconf(base if base.is_dir() else base.parent, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def check_name_fits(path: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> None:
    """Refuse an output name longer than its file system allows, before any work is done.

    Raises:
        InputFileError: naming ``source`` (the input the name was made from) or else ``path``, the output
            name, its length and the limit.
    """
    path = Path(path)
    length, limit = len(os.fsencode(path.name)), name_max(path.parent)
    if length > limit:
        raise InputFileError(
            source if source is not None else path,
            f"its output file name {path.name!r} would be {length} bytes, more than the "
            f"{limit} the file system of {path.parent} allows; rename the input",
        )


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse an output file or folder that cannot be written (read-only file system, no permission, a file
    where a folder is needed), by making and removing a nameless file in the folder that would hold it.

    Raises:
        InputFileError: naming ``path`` and the reason, e.g. ``out: cannot be written (Read-only file system)``.
    """
    path = Path(path)
    base = _existing_ancestor(path)
    if base != path and not base.is_dir():
        raise InputFileError(path, f"cannot be written: {base} is a file, not a folder")
    folder = base if base.is_dir() else base.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise InputFileError(path, f"cannot be written ({err.strerror or err} in {folder})") from None


def make_temp_dir(prefix: str, parent: str | os.PathLike[str]) -> Path:
    """A new uniquely named folder in ``parent`` (for files renamed into place one by one), with mode
    ``0777`` less the umask like ``mkdir`` gives, not :func:`tempfile.mkdtemp`'s ``0700``."""
    limit = name_max(parent) - _RANDOM_CHARS
    while len(os.fsencode(prefix)) > limit:  # a long name is shortened, never refused by the file system
        prefix = prefix[:-1]
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


def _temp_prefix(name: str, suffix: str, limit: int) -> str:
    """``.<name>.tmp-``, with ``name`` shortened (whole characters) so that the temporary name, with mkstemp's
    random characters and ``suffix``, is no longer than ``limit`` bytes."""
    room = limit - len(os.fsencode(f"..tmp-{suffix}")) - _RANDOM_CHARS
    while name and len(os.fsencode(name)) > room:
        name = name[:-1]
    return f".{name}.tmp-"


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
