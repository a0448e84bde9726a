"""The one table of volume file formats: which class reads a file (by its ending; a folder: a DICOM series) and
which writes each ``--output-format`` (after nnU-Net v2's ``imageio/reader_writer_registry.py``).

A new format is one class (:class:`~smp_diffusion_encoder.data.imageio.VolumeIO`: what it reads, what it writes)
and one line in :data:`FORMATS` (importing this module stays light: a format imports its libraries when it
reads or writes); ``read_volume``, ``write_label_map``, ``predict --output-format``, the
evaluation, FLARE discovery and case folders all take their endings from here.

=====================  ======================  ==========================  ====================================
class                  reads                   ``--output-format``         label map written as
=====================  ======================  ==========================  ====================================
``NiftiIO``            ``.nii.gz``, ``.nii``   ``nifti``                   ``<case>.nii.gz``
``NrrdIO``             ``.nrrd``, ``.nhdr``    ``nrrd``                    ``<case>.nrrd``
``MetaImageIO``        ``.mha``, ``.mhd``      ``mha``                     ``<case>.mha``
``DicomSeriesIO``      DICOM series folders
``DicomSegIO``                                 ``dicom-seg``               ``<case>_seg.dcm`` (maps: NIfTI)
``SlicerSegIO``        ``.seg.nrrd`` (labels)  ``seg-nrrd``                ``<case>.seg.nrrd`` (maps: NRRD)
``RtStructIO``                                 ``rtstruct``                ``<case>_rtstruct.dcm`` (maps: NIfTI)
=====================  ======================  ==========================  ====================================

Example:
    >>> reader_for(Path("case_0000.nii.gz")).name, strip_volume_suffix("case_0000.nii.gz")
    ('nifti', 'case_0000')
    >>> OUTPUT_FORMATS
    ('nifti', 'nrrd', 'mha', 'dicom-seg', 'seg-nrrd', 'rtstruct')
"""

from __future__ import annotations

from pathlib import Path

from smp_diffusion_encoder.data.dicom_io import DicomSegIO, DicomSeriesIO
from smp_diffusion_encoder.data.imageio import VolumeIO, matching_ending
from smp_diffusion_encoder.data.itk_io import MetaImageIO, NrrdIO
from smp_diffusion_encoder.data.nifti_io import NiftiIO
from smp_diffusion_encoder.data.rtstruct import RtStructIO
from smp_diffusion_encoder.data.slicer_io import SlicerSegIO
from smp_diffusion_encoder.errors import ConfigError, InputFileError

#: Every format, one instance each; the order is the order of the ``--output-format`` choices.
FORMATS: tuple[VolumeIO, ...] = (
    NiftiIO(),
    NrrdIO(),
    MetaImageIO(),
    DicomSeriesIO(),
    DicomSegIO(),
    SlicerSegIO(),
    RtStructIO(),
)


def volume_suffixes() -> tuple[str, ...]:
    """Every file ending a format of :data:`FORMATS` reads (DICOM series are folders)."""
    return tuple(e for f in FORMATS for e in f.endings)


def image_suffixes() -> tuple[str, ...]:
    """The file endings of :func:`volume_suffixes` that may hold images (not those of label maps only)."""
    return tuple(e for f in FORMATS if f.images for e in f.endings)


def output_formats() -> tuple[str, ...]:
    """The ``--output-format`` choices: every format of :data:`FORMATS` that writes label maps."""
    return tuple(f.name for f in FORMATS if f.write_endings)


#: :func:`volume_suffixes`, :func:`image_suffixes` and :func:`output_formats` of the table as shipped.
VOLUME_SUFFIXES: tuple[str, ...] = volume_suffixes()
IMAGE_SUFFIXES: tuple[str, ...] = image_suffixes()
OUTPUT_FORMATS: tuple[str, ...] = output_formats()


def reader_for(path: Path) -> VolumeIO:
    """The format that reads ``path``: a folder's (DICOM series), else the one with the longest matching ending.

    Raises:
        InputFileError: no format reads it (the message lists what is read).
    """
    path = Path(path)
    if path.is_dir():
        return next(f for f in FORMATS if f.folder)
    ending = matching_ending(path.name, volume_suffixes())
    if ending is None:
        raise InputFileError(
            path, f"is neither a volume file ({', '.join(volume_suffixes())}) nor a DICOM series folder"
        )
    return next(f for f in FORMATS if ending in f.endings)


def output_writer(name: str) -> VolumeIO:
    """The format ``--output-format name`` writes; :class:`ConfigError` lists the choices."""
    for f in FORMATS:
        if f.name == name and f.write_endings:
            return f
    raise ConfigError(f"output_format must be one of {list(output_formats())}, got {name!r}")


def writer_for(path: Path, *, maps: bool = False) -> VolumeIO:
    """The format that writes files ending like ``path`` (``maps``: one that writes float maps too)."""
    endings = {e: f for f in FORMATS if not (maps and f.map_format) for e in f.write_endings}
    ending = matching_ending(Path(path).name, list(endings))
    if ending is None:
        raise ConfigError(f"{path}: output must end in one of {', '.join(endings)}")
    return endings[ending]


def is_volume_file(path: Path) -> bool:
    """True for a file name a reader reads (NIfTI, NRRD, MetaImage...; a DICOM series is a folder)."""
    return matching_ending(Path(path).name, volume_suffixes()) is not None


def strip_volume_suffix(name: str) -> str:
    """``"case_0000.nii.gz"`` -> ``"case_0000"``: the name without the longest ending a reader reads."""
    ending = matching_ending(name, volume_suffixes())
    return name[: -len(ending)] if ending else name


__all__ = [
    "FORMATS",
    "IMAGE_SUFFIXES",
    "OUTPUT_FORMATS",
    "VOLUME_SUFFIXES",
    "image_suffixes",
    "is_volume_file",
    "output_formats",
    "output_writer",
    "reader_for",
    "strip_volume_suffix",
    "volume_suffixes",
    "writer_for",
]
