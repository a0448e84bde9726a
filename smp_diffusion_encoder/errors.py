"""Exception hierarchy.

Every error about something a user handed us names the file (or folder) and the problem, e.g.
``LabelMismatchError: labels/X.nii.gz is 512x512x90 but image is 512x512x91``. The command line turns
any :class:`SmpDiffusionError` into a one-line message and a non-zero exit status.
"""

from __future__ import annotations

from os import PathLike


def one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """A :data:`warnings.formatwarning` that shows ``warning: <message>`` on one line, without the Python source
    line warnings echo by default (the command line and the benchmark scripts install it)."""
    return f"warning: {message}\n"


class SmpDiffusionError(Exception):
    """Base class of all errors raised on purpose by this package."""


class ConfigError(SmpDiffusionError, ValueError):
    """An invalid setting (architecture, feature selection, preprocessing, CLI option)."""


class InputFileError(SmpDiffusionError):
    """A file or folder given by the user is unusable. ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class CorruptFileError(InputFileError):
    """The file cannot be decoded (truncated, not the format its name says, unreadable)."""


class InvalidVolumeError(InputFileError):
    """Decodable, but not a usable CT volume: wrong dimensionality, NaN/Inf voxels, not HU, ..."""


class LabelMismatchError(InputFileError):
    """A label map does not fit its image (shape, affine/spacing) or holds unexpected label ids."""


class DatasetLayoutError(InputFileError):
    """A dataset folder is empty or not laid out as expected (e.g. images without labels)."""


class DicomSeriesError(InputFileError):
    """A DICOM folder mixes series, misses slices, or has inconsistent geometry."""


class MissingDecoderError(InputFileError):
    """A valid file whose compression needs a decoder plugin that is not installed (the message names it)."""


class GeometryWarning(UserWarning):
    """An input's geometry needed attention (gantry tilt corrected, qform and sform disagree); the message
    names the file and what was done."""


class WeightsError(SmpDiffusionError):
    """Weights are missing, not safetensors, or do not match the architecture."""
