"""One file of a Hub repo through the Hugging Face cache (:func:`download_file`); implemented in
:mod:`smp_diffusion_encoder._hub`, which the folder formats use below this package."""

from smp_diffusion_encoder._hub import (
    NotCachedError,
    download_file,
    is_commit,
    list_repo_files_safely,
    not_cached_error,
)

__all__ = ["NotCachedError", "download_file", "is_commit", "list_repo_files_safely", "not_cached_error"]
