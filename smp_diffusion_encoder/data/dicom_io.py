"""The DICOM formats of the table (:mod:`~smp_diffusion_encoder.data.io_registry`): series folders in, DICOM SEG
out. pydicom and highdicom are imported only when a file is read or written."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from smp_diffusion_encoder.data.imageio import LabelInfo, VolumeIO
from smp_diffusion_encoder.errors import ConfigError

if TYPE_CHECKING:
    import nibabel as nib
    import numpy as np

    from smp_diffusion_encoder.data.volume import Volume


class DicomSeriesIO(VolumeIO):
    """A DICOM series folder (classic or enhanced multi-frame CT): :func:`~.dicom.read_dicom_series`."""

    folder: ClassVar[bool] = True

    def read(self, path: Path) -> nib.Nifti1Image:
        from smp_diffusion_encoder.data.dicom import read_dicom_series

        return read_dicom_series(path)


class DicomSegIO(VolumeIO):
    """``<case>_seg.dcm``, a DICOM Segmentation object referencing the input series (DICOM inputs only;
    :func:`~.dicom_seg.write_dicom_seg`); probabilities and uncertainty beside it as NIfTI. A label map without
    any organ gets no SEG (it needs at least one segment): a warning says so."""

    name: ClassVar[str] = "dicom-seg"
    write_endings: ClassVar[tuple[str, ...]] = ("_seg.dcm",)
    map_format: ClassVar[str | None] = "nifti"

    def check_outputs(self, inputs: Sequence[Path], num_classes: int) -> None:
        from smp_diffusion_encoder.data.dicom import require_series_inputs
        from smp_diffusion_encoder.data.remap import FLARE_LABELS

        if num_classes > len(FLARE_LABELS) + 1:
            raise ConfigError(
                f"--output-format dicom-seg names segments by FLARE 2022 ids 1..13, but the model "
                f"predicts {num_classes} classes"
            )
        require_series_inputs(inputs, "dicom-seg", "a SEG", "nifti, nrrd or mha")

    def write_labels(self, labels: np.ndarray, reference: Volume, path: Path, info: LabelInfo) -> Path | None:
        from smp_diffusion_encoder.data.dicom_seg import write_dicom_seg

        if not labels.any():
            warnings.warn(
                f"{reference.source}: no organ was segmented; a DICOM SEG needs at least one segment, so "
                f"{path.name} was not written",
                UserWarning,
                stacklevel=4,
            )
            return None
        return write_dicom_seg(labels, reference, path, algorithm_name=info.algorithm)


__all__ = ["DicomSegIO", "DicomSeriesIO"]
