"""Preprocessed slice store for large unlabeled pools (diffusion pretraining reads ~200k slices).

:func:`build_slice_store` reads each volume once (:func:`~smp_diffusion_encoder.data.volume.read_volume`,
then :func:`~smp_diffusion_encoder.data.preprocessing.volume_to_model_slices`), drops slices that are nearly
all air, and writes **one shard per volume**: ``shards/<stem>-<hash>.npy``, ``(N, S, S)`` float16 in
``[-1, 1]`` (float16 keeps ~3 significant digits: 0.1 HU steps in a 400 HU window, far below CT noise).
``manifest.json`` lists the shards (slice count, kept z indices, source file with its size and mtime),
the volumes that failed, and the :class:`~smp_diffusion_encoder.data.preprocessing.PreprocessingConfig`.

Air-slice skipping: a slice is kept when at least :data:`MIN_BODY_FRACTION` (5 %) of its pixels are above
:data:`BODY_THRESHOLD` (-0.95 in model units, about -150 HU in the default window, i.e. fat or denser). A
slice with less is outside the body, or a sliver of skin, and only teaches the model the padding.

Robustness: every shard and every manifest update is written atomically and the manifest is rewritten after
each finished volume, so a run killed at any moment (even SIGKILL) leaves a valid store; running the same
build again skips volumes whose shard is listed with an unchanged source size and mtime. A manifest built
with another preprocessing is refused unless ``overwrite=True``. A volume that cannot be read raises its
:class:`~smp_diffusion_encoder.errors.InputFileError` (naming it), or with ``skip_bad=True`` is recorded
under ``"bad"`` and skipped.

Example:
    >>> build_slice_store(volumes, "store", PreprocessingConfig(image_size=128), workers=2)   # doctest: +SKIP
    >>> ds = SliceStore("store"); ds[0].shape                                              # doctest: +SKIP
    torch.Size([1, 128, 128])
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from smp_diffusion_encoder._io import atomic_path, atomic_write_json, read_json_object
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig, volume_to_model_slices
from smp_diffusion_encoder.errors import ConfigError, CorruptFileError, InputFileError

STORE_FORMAT = "smp_diffusion_encoder.slice_store"
STORE_VERSION = 1
MANIFEST = "manifest.json"
SHARD_DIR = "shards"
BODY_THRESHOLD = -0.95  # model units; about -150 HU in the default -160..240 window
MIN_BODY_FRACTION = 0.05


def body_slices(slices: np.ndarray) -> np.ndarray:
    """Indices of the ``(Z, S, S)`` model slices to keep (see the air-slice rule in the module docstring)."""
    fraction = (slices > BODY_THRESHOLD).reshape(slices.shape[0], -1).mean(1)
    return np.flatnonzero(fraction >= MIN_BODY_FRACTION)


def _source_stat(path: Path) -> dict[str, Any]:
    st = path.stat()
    if path.is_dir():  # a DICOM series folder: its files' total size and newest mtime
        files = [p.stat() for p in path.iterdir() if p.is_file()]
        return {"size": sum(s.st_size for s in files), "mtime_ns": max([s.st_mtime_ns for s in files], default=0)}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _shard_name(source: Path) -> str:
    stem = source.name.removesuffix(".gz").removesuffix(".nii")
    digest = hashlib.sha1(str(source).encode()).hexdigest()[:8]
    return f"{SHARD_DIR}/{stem}-{digest}.npy"


def _worker_context() -> multiprocessing.context.BaseContext:
    """``fork`` where available (Linux, as torch's DataLoader does): workers start in milliseconds instead of
    re-importing torch/smp/timm (2-5 s each). The workers only run numpy/OpenCV/nibabel code. Elsewhere, or
    with ``SMP_DIFFUSION_MP_START=spawn``, ``spawn``."""
    method = os.environ.get("SMP_DIFFUSION_MP_START") or ("fork" if sys.platform.startswith("linux") else "spawn")
    return multiprocessing.get_context(method)


def _prepare_one(source: str, shard: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Worker: one volume -> one shard (written atomically). Errors come back as data (always picklable)."""
    # Imported here: reading a store (training) needs none of the volume readers (nibabel, SimpleITK, pydicom).
    from smp_diffusion_encoder.data.volume import read_volume

    path = Path(source)
    try:
        slices = volume_to_model_slices(read_volume(path), PreprocessingConfig.from_dict(cfg))
    except InputFileError as err:
        return {"source": source, "error": f"{type(err).__name__}: {err.problem}"}
    stat = _source_stat(path)
    keep = body_slices(slices)
    with atomic_path(shard) as tmp, open(tmp, "wb") as fh:
        np.save(fh, slices[keep].astype(np.float16))
    return {
        "source": source,
        **stat,
        "file": os.path.relpath(shard, Path(shard).parents[1]),
        "n_slices": int(keep.size),
        "n_input_slices": int(slices.shape[0]),
        "z": keep.tolist(),
    }


def _manifest_header(cfg: PreprocessingConfig) -> dict[str, Any]:
    return {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "preprocessing": cfg.to_dict(),
        "dtype": "float16",
        "body_threshold": BODY_THRESHOLD,
        "min_body_fraction": MIN_BODY_FRACTION,
    }


def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``out_dir/manifest.json``; raises :class:`InputFileError` naming it."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise InputFileError(path, "no slice store manifest here (build one with `smp-diffusion prepare-slices`)")
    manifest = read_json_object(path)
    if manifest.get("format") != STORE_FORMAT:
        raise InputFileError(path, f'is not a slice store manifest ("format" is not {STORE_FORMAT!r})')
    if manifest.get("version") != STORE_VERSION or not isinstance(manifest.get("shards"), list):
        raise InputFileError(path, f"unsupported slice store version {manifest.get('version')!r}")
    if "preprocessing" not in manifest and "preprocess" in manifest:  # stores written before the key was renamed
        manifest["preprocessing"] = manifest.pop("preprocess")
    try:  # normalized (e.g. a store without spacing_mm is in the legacy layout), so settings compare exactly
        manifest["preprocessing"] = PreprocessingConfig.from_dict(manifest["preprocessing"]).to_dict()
    except (KeyError, TypeError, ConfigError) as err:
        raise InputFileError(path, f'has no valid "preprocessing" settings ({err})') from err
    return manifest


def build_slice_store(
    volumes: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    cfg: PreprocessingConfig,
    *,
    workers: int = 2,
    overwrite: bool = False,
    skip_bad: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Preprocess ``volumes`` (NIfTI files or DICOM folders) into a slice store in ``out_dir``; resumable.

    Args:
        workers: worker processes (spawned); ``<= 1`` works in this process.
        overwrite: discard an existing store built with another configuration instead of refusing it.
        skip_bad: record unreadable volumes in the manifest and go on instead of raising.
        progress: show a tqdm progress bar (stderr).

    Returns:
        The final manifest (also written to ``out_dir/manifest.json``).

    Raises:
        InputFileError: a volume cannot be used (unless ``skip_bad``), or ``out_dir`` holds a store built
            with other preprocessing (unless ``overwrite``).
    """
    out = Path(out_dir)
    sources = [Path(v).resolve() for v in volumes]
    header = _manifest_header(cfg)
    manifest_path = out / MANIFEST
    old: dict[str, Any] = {"shards": [], "bad": []}
    if manifest_path.exists():
        try:
            old = read_manifest(out)
            mismatch = {k: (old.get(k), v) for k, v in header.items() if old.get(k) != v}
        except InputFileError:
            if not overwrite:
                raise
            mismatch = {}
        if mismatch and not overwrite:
            detail = "; ".join(f"{k}: store has {a!r}, this run {b!r}" for k, (a, b) in mismatch.items())
            raise InputFileError(
                manifest_path,
                f"store was built with other settings ({detail}); pass "
                "overwrite=True (--overwrite) to rebuild it or choose another folder",
            )
        if mismatch or overwrite:
            old = {"shards": [], "bad": []}
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    for stale in (out / SHARD_DIR).glob(".*.tmp-*"):  # leftovers of a killed writer
        stale.unlink(missing_ok=True)

    wanted = {str(s): s for s in sources}
    done: dict[str, dict[str, Any]] = {}
    for entry in [*old.get("shards", []), *old.get("bad", [])]:
        src = entry.get("source")
        if src in wanted and wanted[src].exists() and _unchanged(entry, wanted[src], out):
            done[src] = entry
    listed = {out / SHARD_DIR / Path(e["file"]).name for e in done.values() if "file" in e}
    for orphan in (out / SHARD_DIR).glob("*.npy"):
        if orphan not in listed:
            orphan.unlink()
    todo = [s for s in sources if str(s) not in done]

    def save() -> dict[str, Any]:
        order = {str(s): i for i, s in enumerate(sources)}
        entries = sorted(done.values(), key=lambda e: order[e["source"]])
        shards = [e for e in entries if "error" not in e]
        manifest = {
            **header,
            "complete": len(done) == len(sources),
            "n_slices": sum(e["n_slices"] for e in shards),
            "shards": shards,
            "bad": [e for e in entries if "error" in e],
        }
        atomic_write_json(manifest_path, manifest)
        return manifest

    def record(result: dict[str, Any]) -> None:
        if "error" in result and not skip_bad:
            cls = CorruptFileError if result["error"].startswith("CorruptFileError") else InputFileError
            raise cls(result["source"], result["error"].split(": ", 1)[1])
        if "error" in result and Path(result["source"]).exists():
            result.update(_source_stat(Path(result["source"])))
        done[result["source"]] = result
        save()

    bar = tqdm(
        total=len(sources), initial=len(sources) - len(todo), unit="vol", desc="prepare slices", disable=not progress
    )
    jobs = [(str(s), str(out / _shard_name(s)), cfg.to_dict()) for s in todo]
    try:
        if workers <= 1:
            for job in jobs:
                record(_prepare_one(*job))
                bar.update()
        else:
            with ProcessPoolExecutor(workers, mp_context=_worker_context()) as pool:
                pending: set[Future[dict[str, Any]]] = {pool.submit(_prepare_one, *job) for job in jobs}
                try:
                    while pending:
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            record(fut.result())
                            bar.update()
                except BaseException:
                    for fut in pending:
                        fut.cancel()
                    raise
    finally:
        bar.close()
    return save()


def _unchanged(entry: dict[str, Any], source: Path, out: Path) -> bool:
    stat = _source_stat(source)
    if entry.get("size") != stat["size"] or entry.get("mtime_ns") != stat["mtime_ns"]:
        return False
    return "error" in entry or (out / entry.get("file", "?")).is_file()


class SliceStore(Dataset):
    """All slices of a store as a torch Dataset: item ``i`` is a float32 tensor ``(1, S, S)`` in ``[-1, 1]``.

    Shards are memory-mapped (``np.load(mmap_mode="r")``) lazily in each process; the object pickles
    without them, so a ``DataLoader`` with ``num_workers >= 2`` streams slices from disk.
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.root = Path(out_dir)
        self.manifest = read_manifest(self.root)
        self.config = PreprocessingConfig.from_dict(self.manifest["preprocessing"])
        self.shards: list[dict[str, Any]] = [s for s in self.manifest["shards"] if s["n_slices"] > 0]
        self.offsets = np.cumsum([0] + [s["n_slices"] for s in self.shards])
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[str, int]:
        """``(source file, z in the canonical volume)`` of slice ``index``."""
        shard, row = self._where(index)
        return self.shards[shard]["source"], int(self.shards[shard]["z"][row])

    def _where(self, index: int) -> tuple[int, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"slice {index} out of range for a store of {len(self)} slices")
        index %= len(self)
        shard = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return shard, index - int(self.offsets[shard])

    def _shard(self, shard: int) -> np.ndarray:
        if shard not in self._maps:
            path = self.root / self.shards[shard]["file"]
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise CorruptFileError(path, f"cannot read the shard ({err})") from err
            size = self.config.image_size
            if arr.shape != (self.shards[shard]["n_slices"], size, size):
                raise CorruptFileError(path, f"shard shape {arr.shape} does not match the manifest")
            self._maps[shard] = arr
        return self._maps[shard]

    def __getitem__(self, index: int) -> torch.Tensor:
        shard, row = self._where(index)
        return torch.from_numpy(np.asarray(self._shard(shard)[row], dtype=np.float32))[None]

    def load_all(self) -> torch.Tensor:
        """Every slice at once, ``(N, 1, S, S)`` float16 as stored (item ``i`` is ``load_all()[i].float()``).

        Example:
            >>> SliceStore("store").load_all().to("cuda").shape                             # doctest: +SKIP
            torch.Size([604, 1, 128, 128])
        """
        size = self.config.image_size
        parts = [np.asarray(self._shard(i)) for i in range(len(self.shards))]
        data = np.concatenate(parts) if parts else np.empty((0, size, size), np.float16)
        return torch.from_numpy(data.astype(np.float16, copy=False))[:, None]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}
