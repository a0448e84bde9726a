"""One file of a Hub repo through the Hugging Face cache (:func:`download_file`); implemented in
:mod:`smp_diffusion_encoder._hub`, which the folder formats use below this package."""

from smp_diffusion_encoder._hub import download_file, is_commit, list_repo_files_safely

__all__ = ["download_file", "is_commit", "list_repo_files_safely"]
