"""What a volume file format must do: one class per format, picked by file ending from the table in
:mod:`~smp_diffusion_encoder.data.io_registry` (after nnU-Net v2's ``BaseReaderWriter`` and its registry).

**Reading** (``endings`` or ``folder``): :meth:`VolumeIO.read` returns the file as an in-memory NIfTI image,
voxels as stored in the file's own index order ``(i, j, k)`` and the affine voxel -> world in RAS mm;
:func:`~smp_diffusion_encoder.data.volume.read_volume` then checks it and turns it into a canonical ``(Z, Y, X)``
:class:`~smp_diffusion_encoder.data.volume.Volume`, the same way for every format.

**Writing** (``write_endings``): :meth:`VolumeIO.write_labels` gets canonical ``(Z, Y, X)`` integer ids, the
``reference`` Volume they were predicted on (its grid and header, and its ``source``: e.g. the DICOM series a
SEG or RTSTRUCT references) and a :class:`LabelInfo` (what each id is called and its colour, the algorithm);
it writes one file atomically. :meth:`VolumeIO.write_map` writes a float map (probabilities ``(K, Z, Y, X)``,
uncertainty ``(Z, Y, X)``); a format that cannot hold one names the format that writes them beside it
(``map_format``). :meth:`VolumeIO.check_outputs` refuses, before anything is written, inputs or models the
format cannot serve (e.g. a DICOM SEG of a NIfTI input).

Grid formats (:class:`GridIO`: NIfTI, NRRD, MetaImage) write any array with exactly the reference file's grid
and implement only :meth:`GridIO.write_array` (file-order data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from smp_diffusion_encoder.errors import ConfigError

if TYPE_CHECKING:
    import nibabel as nib
    import numpy as np
    from numpy.typing import DTypeLike

    from smp_diffusion_encoder.data.volume import Volume


@dataclass(frozen=True)
class LabelInfo:
    """What the ids of a label map mean, for writers that record it (segment names, colours, the algorithm).

    Attributes:
        names: label id -> name (background 0 is not listed).
        colors: label id -> ``"#rrggbb"`` display colour (may be empty).
        algorithm: the name recorded as the segmentation's author.
    """

    names: Mapping[int, str]
    colors: Mapping[int, str] = field(default_factory=dict)
    algorithm: str = "smp_diffusion_encoder"

    @classmethod
    def flare(cls, algorithm: str = "smp_diffusion_encoder") -> LabelInfo:
        """The 13 FLARE 2022 organs (:data:`~smp_diffusion_encoder.data.remap.FLARE_LABELS`) and their colours."""
        from smp_diffusion_encoder.data.remap import FLARE_COLORS, FLARE_LABELS

        return cls(dict(FLARE_LABELS), dict(FLARE_COLORS), algorithm)


class VolumeIO:
    """One volume file format (see the module docstring); subclasses set the class attributes they support."""

    #: The name ``--output-format`` knows it by (``""`` for a format that is only read).
    name: ClassVar[str] = ""
    #: File endings it reads, lower case (``(".nii.gz", ".nii")``); the longest matching ending wins.
    endings: ClassVar[tuple[str, ...]] = ()
    #: It reads folders (a DICOM series) rather than files.
    folder: ClassVar[bool] = False
    #: Its files can be images (``False``: label maps only, e.g. 3D Slicer segmentations).
    images: ClassVar[bool] = True
    #: File endings it writes (``()``: it does not write); the first is what ``predict`` appends to a case name.
    write_endings: ClassVar[tuple[str, ...]] = ()
    #: The format (its ``name``) that writes float maps beside its label maps; ``None``: this one.
    map_format: ClassVar[str | None] = None

    @property
    def label_ending(self) -> str | None:
        """What ``predict`` appends to a case name for the label map (``None``: this format does not write)."""
        return self.write_endings[0] if self.write_endings else None

    def read(self, path: Path) -> nib.Nifti1Image:
        """The file as an in-memory NIfTI image in the file's voxel order (see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} does not read files")

    def check_outputs(self, inputs: Sequence[Path], num_classes: int) -> None:
        """Raise :class:`ConfigError` when this format cannot hold the labels of these inputs (default: it can)."""

    def write_labels(self, labels: np.ndarray, reference: Volume, path: Path, info: LabelInfo) -> Path | None:
        """Write canonical ``(Z, Y, X)`` ids for ``reference``; returns the path (``None``: nothing to write)."""
        raise NotImplementedError(f"{type(self).__name__} does not write label maps")

    def write_map(self, array: np.ndarray, reference: Volume, path: Path, dtype: DTypeLike = "float32") -> Path:
        """Write a canonical float map, ``(Z, Y, X)`` or ``(C, Z, Y, X)``, for ``reference``."""
        raise NotImplementedError(
            f"{type(self).__name__} does not write float maps (it writes them as {self.map_format})"
        )


class GridIO(VolumeIO):
    """A format that stores an array on the reference file's exact grid (NIfTI, NRRD, MetaImage)."""

    def write_labels(self, labels: np.ndarray, reference: Volume, path: Path, info: LabelInfo) -> Path:
        """Ids stored as ``uint8`` (``uint16``/``int32`` above 255/65535) with exactly the reference's geometry."""
        import numpy as np

        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_:
            raise ConfigError(f"write_label_map needs integer labels, got dtype {labels.dtype}")
        if labels.size and int(labels.min()) < 0:
            raise ConfigError(f"write_label_map got negative label ids (min {int(labels.min())})")
        top = int(labels.max()) if labels.size else 0
        dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32
        return self._write(labels.astype(dtype, copy=False), reference, path, dtype)

    def write_map(self, array: np.ndarray, reference: Volume, path: Path, dtype: DTypeLike = "float32") -> Path:
        return self._write(array.astype(dtype, copy=False), reference, path, dtype)

    def write_array(self, data: np.ndarray, reference: Volume, path: Path, dtype: DTypeLike) -> Path:
        """Write file-order ``(i, j, k[, C])`` ``data`` on ``reference``'s file grid, atomically."""
        raise NotImplementedError

    def _write(self, array: np.ndarray, reference: Volume, path: Path, dtype: DTypeLike) -> Path:
        if array.ndim not in (3, 4) or array.shape[-3:] != reference.array.shape:
            raise ConfigError(
                f"{path}: array is {array.shape} but reference {reference.name} is (Z, Y, X) "
                f"{reference.array.shape} (a leading class axis is allowed)"
            )
        return self.write_array(reference.to_original(array), reference, Path(path), dtype)


def matching_ending(name: str, endings: Sequence[str]) -> str | None:
    """The longest of ``endings`` that ``name`` ends with (case-insensitive), or ``None``."""
    lower = name.lower()
    found = [e for e in endings if lower.endswith(e)]
    return max(found, key=len) if found else None


__all__ = ["GridIO", "LabelInfo", "VolumeIO", "matching_ending"]
