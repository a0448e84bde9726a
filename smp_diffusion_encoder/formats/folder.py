"""The files every format here is made of, read and written in one place, locally or from a Hub snapshot.

A weights folder, a fine-tuned model folder and a packaged default are all ``config.json`` (a JSON object) +
``model.safetensors`` (+ a ``README.md`` model card); a pretraining run keeps its weights in safetensors files
too. This module is their one reader and writer:

* :func:`open_folder`: the one resolver. A local folder, or a Hub repo id (``"org/name"``) whose files come
  through the Hugging Face cache as one snapshot (a 40-hex revision already cached makes no request; each
  download is checked against the server's SHA-256 and the safetensors header). Returns a :class:`Folder`.
* :meth:`Folder.state_dict`, :func:`read_safetensors`: the one safetensors reader (header validated against
  the file size first, so a truncated file is never returned as weights); :func:`read_config`: the one
  ``config.json`` reader.
* :func:`write_safetensors`, :func:`write_folder`: atomic writes; a folder's ``config.json`` is written last,
  so a folder with a config is complete.

Only safetensors are ever read: a folder or repo that offers only ``pytorch_model.bin`` / ``*.pt`` / ``*.pth``
is refused with a :class:`~smp_diffusion_encoder.errors.WeightsError` that names those files (unpickling can
run arbitrary code). What each format keeps in ``config.json`` is its own module's business
(:mod:`.encoder_weights`, :mod:`.model_folder`, :mod:`.run_folder`).

Example:
    >>> folder = open_folder("weights/ddpm-ct")                                   # doctest: +SKIP
    >>> folder.config["preprocessing"], len(folder.state_dict())                   # doctest: +SKIP
    ({'hu_window': [-160.0, 240.0], 'image_size': 128, 'spacing_mm': 3.0}, 212)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

from smp_diffusion_encoder._hub import download_file, list_repo_files_safely, verify_cached_blob
from smp_diffusion_encoder._io import atomic_path, atomic_write_json, atomic_write_text, read_json_object
from smp_diffusion_encoder.errors import WeightsError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
#: Pickle-based weight files: never loaded, named in the refusal message.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@dataclass(frozen=True)
class Folder:
    """An opened folder: its parsed ``config.json`` and where its ``model.safetensors`` is.

    Attributes:
        path: the local folder, or the Hugging Face cache snapshot of a Hub repo.
        source: how errors name it (the folder, or ``"org/name@revision"``).
        config: the parsed ``config.json``.
        repo_id, revision: the Hub repo it came from (``None`` for a local folder).
    """

    path: Path
    source: str
    config: dict[str, Any]
    repo_id: str | None = None
    revision: str | None = None

    @property
    def weights_path(self) -> Path:
        """``model.safetensors``: a local folder's own file, or downloaded (hash and header checked) from the
        same Hub snapshot as ``config.json``."""
        if self.repo_id is None:
            return self.path / WEIGHTS_NAME
        path = fetch_weights(self.repo_id, revision=self.revision)
        if path.parent != self.path:
            raise WeightsError(f"{self.source}: {CONFIG_NAME} and {WEIGHTS_NAME} resolved to different snapshots")
        return path

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors of ``model.safetensors`` on the CPU (read after :func:`validate_safetensors`)."""
        return read_safetensors(self.weights_path, source=f"{self.source}/{WEIGHTS_NAME}")


def open_folder(
    path_or_repo: str | os.PathLike[str],
    *,
    revision: str | None = None,
    check: Callable[[dict[str, Any], str], None] | None = None,
) -> Folder:
    """Open a local folder or a Hub repo holding ``config.json`` + ``model.safetensors``.

    A local folder must hold both files (its safetensors header is validated now); from the Hub only
    ``config.json`` is downloaded here, ``model.safetensors`` when :attr:`Folder.weights_path` is first asked
    for. ``check(config, source)`` may refuse a config that is not the expected format (raising
    :class:`WeightsError`).
    """
    local = Path(path_or_repo)
    if local.is_dir():
        source = str(local)
        if not (local / WEIGHTS_NAME).is_file():
            raise WeightsError(no_safetensors_message(source, [p.name for p in local.iterdir()]))
        if not (local / CONFIG_NAME).is_file():
            raise WeightsError(f"{source}: missing {CONFIG_NAME}")
        validate_safetensors(local / WEIGHTS_NAME, source=f"{source}/{WEIGHTS_NAME}")
        folder = Folder(local, source, read_config(local / CONFIG_NAME, source=source))
    else:
        repo = str(path_or_repo)
        source = f"{repo}@{revision}" if revision else repo
        config_path = Path(download_file(repo, CONFIG_NAME, revision=revision))
        folder = Folder(config_path.parent, source, read_config(config_path, source=source), repo, revision)
    if check is not None:
        check(folder.config, folder.source)
    return folder


def fetch_weights(repo_id: str, *, revision: str | None = None) -> Path:
    """Download ``model.safetensors`` (never a pickle file), verify its hash and header; return its path.

    A repo without it raises :class:`WeightsError` naming any pickle-only weight files it offers.
    """
    source = f"{repo_id}@{revision}" if revision else repo_id
    try:
        path = Path(download_file(repo_id, WEIGHTS_NAME, revision=revision))
    except WeightsError as err:
        cause = err.__cause__
        if isinstance(cause, EntryNotFoundError) and not isinstance(cause, LocalEntryNotFoundError):
            names = list_repo_files_safely(repo_id, revision=revision)
            raise WeightsError(no_safetensors_message(source, names)) from cause
        raise
    verify_cached_blob(path, source=f"{source}/{WEIGHTS_NAME}")
    validate_safetensors(path, source=f"{source}/{WEIGHTS_NAME}")
    return path


def read_config(
    path: str | os.PathLike[str],
    *,
    source: str | None = None,
    what: str = "",
    error: Callable[[str], Exception] = WeightsError,
) -> dict[str, Any]:
    """The JSON object in a ``config.json``; any problem raises ``error(message)`` naming ``source/config.json``
    (or ``path``) and ``what`` it is (e.g. ``"run config"``)."""
    where = f"{source}/{Path(path).name}" if source is not None else str(path)
    return read_json_object(path, lambda problem: error(f"{where}: {what + ' ' if what else ''}{problem}"))


def read_safetensors(path: str | os.PathLike[str], *, source: str) -> dict[str, torch.Tensor]:
    """Load a safetensors file on the CPU after :func:`validate_safetensors`; errors are :class:`WeightsError`."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise WeightsError(f"{source}: no such file")
    validate_safetensors(path, source=source)
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # SafetensorsError: dtype/shape/offset inconsistencies
        raise WeightsError(f"{source}: corrupted safetensors file ({err})") from err


def validate_safetensors(path: str | os.PathLike[str], *, source: str) -> None:
    """Validate a safetensors header against the file size without loading any tensor.

    A truncated or corrupted file (wrong header length, offsets past the end, bytes left over, invalid
    JSON) raises :class:`WeightsError` naming ``source``; garbage is never returned as weights.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n <= 0 or n > min(size - 8, 100_000_000):
            raise WeightsError(f"{source}: not a safetensors file (header length {n}, file size {size} bytes)")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise WeightsError(f"{source}: corrupted safetensors header ({err})") from err
    if not isinstance(header, dict):
        raise WeightsError(f"{source}: corrupted safetensors header (not a JSON object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            lo, hi = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise WeightsError(f"{source}: corrupted safetensors header entry {name!r}") from err
        if not 0 <= lo <= hi:
            raise WeightsError(f"{source}: tensor {name!r} has invalid offsets {lo}..{hi}")
        end = max(end, hi)
    if 8 + n + end != size:
        raise WeightsError(
            f"{source}: truncated or padded safetensors file: header promises {8 + n + end} bytes, file has {size}"
        )


def write_safetensors(
    path: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write tensors atomically as safetensors (CPU, contiguous: channels-last tensors save too); returns the path."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", **(metadata or {})})
    return Path(path)


def write_folder(
    out_dir: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    card: str | None = None,
) -> Path:
    """``model.safetensors``, then ``README.md`` (when given), then ``config.json`` into ``out_dir``, each
    atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / WEIGHTS_NAME, state_dict)
    if card is not None:
        atomic_write_text(out / CARD_NAME, card)
    atomic_write_json(out / CONFIG_NAME, dict(config))
    return out


def no_safetensors_message(source: str, names: list[str]) -> str:
    """Why a folder or repo without ``model.safetensors`` is refused, naming any pickle files it offers."""
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    msg = f"{source}: no {WEIGHTS_NAME}"
    if pickles:
        msg += f"; only pickle-based weights {pickles}, which are refused (unpickling can run arbitrary code)"
    return msg + ". Convert them to safetensors with a trusted copy of the model, then save_encoder_weights()."


__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "PICKLE_SUFFIXES",
    "WEIGHTS_NAME",
    "Folder",
    "fetch_weights",
    "no_safetensors_message",
    "open_folder",
    "read_config",
    "read_safetensors",
    "validate_safetensors",
    "write_folder",
    "write_safetensors",
]
