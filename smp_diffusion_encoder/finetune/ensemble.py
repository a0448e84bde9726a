"""``finetune --ensemble N``: N runs on the same labeled slices, one model folder predicting their mean probability.

:func:`~smp_diffusion_encoder.finetune.api.finetune` hands a config with ``ensemble > 1`` to
:func:`finetune_ensemble`, passing itself: each member is an ordinary run of it (so this module does not import
``api``, which imports it).
The model folder is :func:`~smp_diffusion_encoder.formats.save_ensemble`'s (measured:
``benchmarks/results/ensemble.md``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from smp_diffusion_encoder._io import atomic_write_json
from smp_diffusion_encoder.data.flare import Case
from smp_diffusion_encoder.data.splits import Split, read_split_json, write_split_json
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.finetune.config import FinetuneConfig
from smp_diffusion_encoder.finetune.data import split_path
from smp_diffusion_encoder.finetune.result import (
    CONFIG_NAME,
    MEMBERS_DIR_NAME,
    MODEL_DIR_NAME,
    SUMMARY_NAME,
    FinetuneResult,
    recorded_settings,
)
from smp_diffusion_encoder.formats.folder import read_config
from smp_diffusion_encoder.formats.model_folder import save_ensemble

#: Member ``k`` of an ensemble trains with seed ``config.seed + ENSEMBLE_SEED_STRIDE * k``.
ENSEMBLE_SEED_STRIDE = 1000
#: Written when an ensemble run starts: its settings, which ``resume`` must repeat.
ENSEMBLE_START_NAME = "ensemble.json"


def finetune_ensemble(
    finetune: Callable[..., FinetuneResult],
    root_or_cases: str | os.PathLike[str] | Sequence[Case],
    config: FinetuneConfig,
    *,
    out_dir: str | os.PathLike[str],
    split: Split | None,
    pool: Mapping[str, Iterable[int]] | None,
    resume: bool,
    progress: bool,
    cache_dir: str | os.PathLike[str] | None,
) -> FinetuneResult:
    """``config.ensemble`` runs of ``finetune`` (:func:`~smp_diffusion_encoder.finetune.api.finetune`, which
    calls this with itself) on the same labeled slices, then one ensemble model folder.

    Member ``k`` is an ordinary run in ``DIR/members/member<k>`` with seed ``seed + 1000 k`` (its own
    initialisation, augmented views and batch order); member 0 draws the split (or takes ``split``), the others
    train on it. ``DIR/ensemble.json`` records the settings when the run starts; ``resume`` must repeat them
    (else :class:`ConfigError`), keeps finished members and continues an interrupted one from its checkpoint.
    ``DIR/model`` is written last (:func:`~smp_diffusion_encoder.formats.save_ensemble`)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "--ensemble trains its models one after another in one process; launch it without torchrun "
            "(or train the members as separate runs and join them with formats.save_ensemble)"
        )
    out = Path(out_dir)
    members_dir = out / MEMBERS_DIR_NAME
    started = out / ENSEMBLE_START_NAME
    if not resume and (members_dir.exists() or (out / MODEL_DIR_NAME).exists() or (out / "checkpoint.pt").exists()):
        raise ConfigError(f"{out} holds an earlier run: continue it with --resume, or choose another --out")
    settings = recorded_settings(config, split=None if split is None else split.to_dict())
    if resume:
        if not started.is_file():
            raise ConfigError(f"resume: {out} holds no ensemble run (no {started.name})")
        before = read_config(started)
        if before != settings:
            changed = sorted(k for k in {*before, *settings} if before.get(k) != settings.get(k))
            raise ConfigError(
                f"resume: {out} was started with other settings ({', '.join(changed)} differ: "
                + "; ".join(f"{k} {before.get(k)!r} then, {settings.get(k)!r} now" for k in changed)
                + "); its finished models would not match"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(started, settings)  # what every member is trained with, checked on resume
    results: list[FinetuneResult] = []
    for k in range(config.ensemble):
        run = members_dir / f"member{k}"
        member = dataclasses.replace(config, ensemble=1, seed=config.seed + ENSEMBLE_SEED_STRIDE * k)
        summary = run / SUMMARY_NAME
        if resume and summary.is_file() and (run / MODEL_DIR_NAME).is_dir():
            # a finished member; its model folder is found by place, not by the path its summary recorded
            results.append(FinetuneResult(**{**read_config(summary), "model_dir": run / MODEL_DIR_NAME}))
        else:
            results.append(
                finetune(
                    root_or_cases,
                    member,
                    out_dir=run,
                    split=split,
                    pool=pool if split is None else None,
                    resume=resume and (run / "checkpoint.pt").exists(),
                    progress=progress,
                    cache_dir=cache_dir,
                )
            )
        if split is None:
            split = read_split_json(split_path(run))
    assert split is not None
    write_split_json(split_path(out), split)
    atomic_write_json(out / CONFIG_NAME, {**config.to_dict(), "split": split.to_dict()})
    model_dir = save_ensemble([r.model_dir for r in results], out / MODEL_DIR_NAME)
    result = FinetuneResult(
        model_dir,
        sum(r.steps for r in results),
        sum(r.planned for r in results),
        f"{len(results)} models on the same slices: " + "; ".join(r.reason for r in results),
        None,
        None,
        all(bool(r.flattened) for r in results) if all(r.flattened is not None for r in results) else None,
        " | ".join(r.flatness for r in results),
        results[0].schedule,
    )
    atomic_write_json(out / SUMMARY_NAME, result.to_dict())
    return result


__all__ = ["ENSEMBLE_SEED_STRIDE", "ENSEMBLE_START_NAME", "finetune_ensemble"]
