"""NIfTI header sanity checks that do not stop a read but must not pass silently."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from smp_diffusion_encoder.errors import GeometryWarning

#: A NIfTI file's qform and sform may place its corner voxels this far apart (mm) before we warn.
QFORM_SFORM_TOLERANCE_MM: float = 0.1


def check_qform_sform(img: nib.Nifti1Image, where: Path | str) -> None:
    """Warn when a NIfTI file's qform and sform (both set) place the volume differently.

    Compared at the 8 corner voxels of the grid; beyond :data:`QFORM_SFORM_TOLERANCE_MM` a
    :class:`~smp_diffusion_encoder.errors.GeometryWarning` names the distance, any axis they disagree on
    (worst: left-right) and the one used. We use the sform (nibabel's ``img.affine``, as FSL does). Measured
    with SimpleITK 2.5: ITK uses the sform only when its code is 1 (scanner) and it is orthonormal, and the
    qform otherwise, so such a file is read differently by ITK-based tools.
    """
    header = img.header
    q_code, s_code = int(header["qform_code"]), int(header["sform_code"])
    if q_code == 0 or s_code == 0:
        return
    qform, sform = header.get_qform(), header.get_sform()
    shape = np.array(img.shape[:3]) - 1
    corners = np.array([[i, j, k, 1] for i in (0, shape[0]) for j in (0, shape[1]) for k in (0, shape[2])]).T
    distance = float(np.linalg.norm((qform @ corners - sform @ corners)[:3], axis=0).max())
    if not np.isfinite(distance) or distance <= QFORM_SFORM_TOLERANCE_MM:
        return
    q_axes, s_axes = nib.aff2axcodes(qform), nib.aff2axcodes(sform)
    detail = ""
    if q_axes != s_axes:
        detail = f"; they disagree on the voxel axes' directions (sform {''.join(s_axes)}, qform {''.join(q_axes)})"
        if sorted(a for a in q_axes if a in "LR") != sorted(a for a in s_axes if a in "LR"):
            detail += ": LEFT AND RIGHT ARE SWAPPED between them"
    warnings.warn(
        f"{where}: qform (code {q_code}) and sform (code {s_code}) disagree by up to {distance:.3g} mm{detail}; "
        f"using the sform, as nibabel and FSL do (ITK-based tools may use the qform). Fix the header of this file "
        f"so that both say where the patient is",
        GeometryWarning,
        stacklevel=4,
    )
