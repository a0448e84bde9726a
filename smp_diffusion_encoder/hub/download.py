"""One file from a Hub repo through the Hugging Face cache, with errors turned into :class:`WeightsError`.

Every failure names the repo, the revision and the file, and says what to do: a missing repo or file,
an unknown revision, offline mode (``HF_HUB_OFFLINE=1``) without a cached copy, an unreachable server,
a download cut short. No retries are added on top of huggingface_hub's own. A file missing from the cache
raises :class:`NotCachedError`, which timm's ``hf-hub:`` path raises too
(:mod:`smp_diffusion_encoder.registry.timm_names`).
"""

from __future__ import annotations

import re

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from smp_diffusion_encoder.errors import WeightsError

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def is_commit(revision: str | None) -> bool:
    """True for a full 40-hex commit id (the only kind of revision we register in code)."""
    return bool(revision and COMMIT_RE.match(revision))


class NotCachedError(WeightsError, LocalEntryNotFoundError):
    """A Hub file that is not in the local cache and cannot be downloaded (``HF_HUB_OFFLINE=1``, or the Hub is
    unreachable). Also a huggingface_hub ``LocalEntryNotFoundError``, so code that catches that still does."""


def not_cached_error(
    repo_id: str, filename: str, *, revision: str | None = None, fill: str = "", cache_dir: str | None = None
) -> NotCachedError:
    """The error for ``filename`` of ``repo_id@revision`` missing from the cache: it names the repo, the cache and
    the command that fills it (``hf download REPO [fill] [--revision REV]``; ``fill=""``: the whole repo)."""
    where = f"{repo_id}@{revision or 'main'}/{filename}"
    command = " ".join(
        ["hf download", repo_id, *([fill] if fill else []), *(["--revision", revision] if revision else [])]
    )
    if constants.is_offline_mode():
        return NotCachedError(
            f"{where}: not in the local Hugging Face cache ({cache_dir or constants.HF_HUB_CACHE}) and "
            f"HF_HUB_OFFLINE=1 forbids downloading it. Run once online, or pre-download it with `{command}`"
        )
    return NotCachedError(
        f"{where}: could not be downloaded (the Hub at {constants.ENDPOINT} was unreachable or the download "
        f"failed) and there is no cached copy. Check the connection and retry, or pre-download it with `{command}`"
    )


def download_file(repo_id: str, filename: str, *, revision: str | None = None) -> str:
    """Local path of ``filename`` of Hub model repo ``repo_id`` at ``revision`` (cached, no re-download).

    Example:
        >>> download_file("my-org/ddpm-ct-flare", "config.json", revision="0123abcd" * 5)  # doctest: +SKIP
        '/home/me/.cache/huggingface/hub/models--my-org--ddpm-ct-flare/snapshots/0123.../config.json'
    """
    where = f"{repo_id}@{revision or 'main'}/{filename}"
    try:
        return hf_hub_download(repo_id, filename, revision=revision)
    except HFValidationError as err:
        raise WeightsError(f"{repo_id!r} is neither an existing folder nor a valid Hub repo id ({err})") from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise not_cached_error(repo_id, filename, revision=revision, fill=filename) from err
    except RevisionNotFoundError as err:
        raise WeightsError(f"{where}: revision {revision!r} does not exist in {repo_id}") from err
    except RepositoryNotFoundError as err:
        raise WeightsError(
            f"{where}: repository {repo_id} not found on {constants.ENDPOINT} (or it is private/gated: log in "
            f"with `hf auth login`)"
        ) from err
    except EntryNotFoundError as err:
        raise WeightsError(f"{where}: the repository has no file {filename!r}") from err
    except Exception as err:  # HTTP errors, httpx transport errors (connection refused/reset), OSError
        raise WeightsError(f"{where}: download failed ({type(err).__name__}: {err}); nothing was loaded") from err


def list_repo_files_safely(repo_id: str, *, revision: str | None = None) -> list[str]:
    """The repo's file names, or ``[]`` when they cannot be listed (offline, no server): never raises."""
    if constants.is_offline_mode():
        return []
    try:
        from huggingface_hub import HfApi

        return list(HfApi().list_repo_files(repo_id, revision=revision))
    except Exception:  # listing only improves an error message; never mask the original problem
        return []
