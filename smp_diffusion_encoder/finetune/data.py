"""Labeled slices for fine-tuning: read and preprocess the labeled cases, split them into train/validation.

The training slices follow the project's few-shot policy (:func:`~smp_diffusion_encoder.data.splits.select_slices`,
seeded, spread along z). Validation slices are drawn (seeded) from the *other* eligible slices, never
closer than ``gap + 1`` slices in z to a training slice of the same case, so neighbouring, nearly identical
slices do not leak into validation. Both parts go into one :class:`~smp_diffusion_encoder.data.splits.Split`
(``train`` / ``evaluation``), written as ``split.json``.

Partly labeled scans (a few slices labeled inside a whole scan, the others empty) take part with exactly the
slices their sidecar lists (:mod:`~smp_diffusion_encoder.data.labeled_slices`): those are their eligible slices,
the ones labeled as holding no organ included, and nothing else of them ever trains or validates.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from smp_diffusion_encoder.data.augment import Strength, build_augmentation
from smp_diffusion_encoder.data.flare import CASE_LABEL_NAMES, Case, FlareDataset, find_labeled_cases
from smp_diffusion_encoder.data.labeled_slices import read_label_map
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig, SliceGeometry
from smp_diffusion_encoder.data.splits import Split, eligible_slices, select_slices
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.errors import ConfigError


@dataclass(frozen=True)
class LabeledSlices:
    """Model slices with labels: ``images`` ``(N, 1, S, S)`` float32 in [-1, 1], ``labels`` ``(N, S, S)`` int64.

    ``ids`` names each slice ``"<case_id>:<z>"`` (the :class:`~smp_diffusion_encoder.heads.FeatureCache` key).
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)


def labeled_cases(root_or_cases: str | os.PathLike[str] | Sequence[Case]) -> list[Case]:
    """The labeled training cases of a FLARE root, of a case folder or a folder of case folders
    (:func:`~smp_diffusion_encoder.data.flare.find_labeled_cases`), or the labeled ones of a given list; at
    least one is required. A root with a ``train/`` folder (the shipped demo: ``train/`` and ``test/`` folders of
    case folders) trains on ``train/`` only, as a FLARE root trains on its labeled ``Training`` cases."""
    if isinstance(root_or_cases, (str, os.PathLike)):
        path = Path(root_or_cases)
        if (path / "train").is_dir() and not any((path / n).is_file() for n in CASE_LABEL_NAMES):
            path = path / "train"
        flare = (path / "Training").is_dir() or (path / "Tuning").is_dir()
        cases = FlareDataset.discover(path).labeled if flare else find_labeled_cases(path)
        where = str(root_or_cases)
    else:
        cases, where = list(root_or_cases), "the given cases"
    cases = [c for c in cases if c.label is not None]
    if not cases:
        raise ConfigError(f"{where}: no labeled case to fine-tune on")
    return cases


def load_cases(
    cases: Sequence[Case], prep: PreprocessingConfig, *, label_table: Mapping[str, int] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{case_id: (images (Z, S, S) float32, labels (Z, S, S) uint8)}`` preprocessed with ``prep``."""
    return load_labeled(cases, prep, label_table=label_table)[0]


def load_labeled(
    cases: Sequence[Case], prep: PreprocessingConfig, *, label_table: Mapping[str, int] | None = None
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, list[int]]]:
    """:func:`load_cases` and ``{case_id: labeled z}`` of the partly labeled cases among them (the slices their
    sidecars list: :mod:`~smp_diffusion_encoder.data.labeled_slices`). Label maps may be any volume format or
    3D Slicer ``.seg.nrrd`` files (segment names mapped through ``label_table``); each must lie on its
    image's grid."""
    out, labeled = {}, {}
    for case in cases:
        assert case.label is not None
        image = read_volume(case.image)
        label = read_label_map(case.label, image, table=label_table)
        geometry = SliceGeometry.of(image, prep)
        out[case.case_id] = (geometry.image_slices(image, prep), geometry.label_slices(label.volume))
        if label.labeled is not None:
            labeled[case.case_id] = list(label.labeled)
    return out, labeled


def build_split(
    label_maps: Mapping[str, np.ndarray],
    budget: str,
    seed: int,
    *,
    val_fraction: float = 0.2,
    gap: int = 2,
    max_val_slices: int = 64,
    pool: Mapping[str, Iterable[int]] | None = None,
    labeled: Mapping[str, Sequence[int]] | None = None,
) -> Split:
    """Few-shot training slices under ``budget`` plus seeded validation slices (see the module docstring).

    Both are drawn from each case's eligible slices: its slices with an organ (a fully labeled scan), or, for
    the partly labeled cases in ``labeled`` (``{case_id: stated labeled z}``), exactly its labeled slices,
    those labeled as holding no organ included.

    ``val_fraction`` of the eligible slices that are more than ``gap`` slices from every training slice
    (at least 1, at most ``max_val_slices``); ``val_fraction=0`` gives no validation. ``pool``
    (``{case_id: z indices}``) restricts both parts to those slices, e.g. the train side of a
    :func:`~smp_diffusion_encoder.data.splits.heldout_split`, so held-out slices are never touched.

    When no slice is left for validation (budget ``"all"``) it warns and returns a split without one.

    Raises:
        ConfigError: bad fraction, or an empty pool.
    """
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    stated = labeled or {}
    eligible = {c: sorted(stated[c]) if c in stated else eligible_slices(lab) for c, lab in label_maps.items()}
    if pool is not None:
        allowed = {c: {int(z) for z in zs} for c, zs in pool.items()}
        eligible = {c: [z for z in zs if z in allowed.get(c, ())] for c, zs in eligible.items()}
        eligible = {c: zs for c, zs in eligible.items() if zs}
        if not eligible:
            raise ConfigError("the slice pool holds no eligible labeled slice (with an organ, or listed as labeled)")
    split = select_slices(eligible, budget, seed)
    if val_fraction == 0:
        return dataclasses.replace(split, params={"val_fraction": 0.0, "gap": gap})
    train = split.by_case("train")
    candidates = [
        (c, z) for c, zs in sorted(eligible.items()) for z in zs if all(abs(z - t) > gap for t in train.get(c, []))
    ]
    if not candidates:  # e.g. budget "all": every slice trains, so there is nothing to validate on
        warnings.warn(
            f"no eligible slice is more than {gap} slices from the {len(split.train)} training slices: "
            f"training without validation (fixed number of steps, no early stopping)",
            stacklevel=2,
        )
        return dataclasses.replace(split, params={"val_fraction": 0.0, "gap": gap})
    n = min(max_val_slices, max(1, round(val_fraction * len(candidates))))
    rng = np.random.default_rng([seed, 1])
    chosen = sorted(candidates[i] for i in rng.choice(len(candidates), size=n, replace=False))
    return dataclasses.replace(
        split,
        evaluation=tuple(chosen),
        params={"val_fraction": val_fraction, "gap": gap, "max_val_slices": max_val_slices},
    )


def gather(volumes: Mapping[str, tuple[np.ndarray, np.ndarray]], pairs: Sequence[tuple[str, int]]) -> LabeledSlices:
    """Stack the slices ``pairs`` (``(case_id, z)``) of ``volumes`` (from :func:`load_cases`)."""
    if not pairs:
        return LabeledSlices(torch.empty(0, 1, 0, 0), torch.empty(0, 0, 0, dtype=torch.long), ())
    images = np.stack([volumes[c][0][z] for c, z in pairs])[:, None]
    labels = np.stack([volumes[c][1][z] for c, z in pairs])
    return LabeledSlices(
        torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
        torch.from_numpy(labels.astype(np.int64)),
        tuple(f"{c}:{z}" for c, z in pairs),
    )


#: Views of all labeled slices together that :func:`views_per_slice` aims at (128: 32 per slice at 4 slices).
VIEW_TOTAL = 128


def views_per_slice(n_slices: int, total: int = VIEW_TOTAL, low: int = 4, high: int = 32) -> int:
    """How many views (the slice itself + augmented copies) each of ``n_slices`` labeled slices gets:
    ``clamp(total // n_slices, low, high)`` (4 slices: 32; 16: 8; 64: 4). The frozen encoder runs once per
    view, so the cost grows with ``max(total, low * n_slices)``, not with the number of training steps."""
    if n_slices < 1:
        raise ConfigError(f"views_per_slice needs at least one slice, got {n_slices}")
    return int(min(max(total // n_slices, low), high))


def augmented_views(
    slices: LabeledSlices, views: int, strength: Strength, seed: int, hu_window: tuple[float, float]
) -> LabeledSlices:
    """Each slice and ``views - 1`` augmented copies (:mod:`smp_diffusion_encoder.data.augment`).

    The slices themselves come first (ids unchanged), then the copies, named ``"<id>#aug<k>"`` (``k = 1 ..
    views - 1``). Copy ``k`` of a slice is a function of ``(seed, slice id, k)`` alone, so runs with one seed
    share views of the slices they share, and a resumed run rebuilds the same views.

    Raises:
        ConfigError: ``views < 1`` or an unknown strength.
    """
    if views < 1:
        raise ConfigError(f"views must be >= 1, got {views}")
    if views == 1 or strength == "none" or not len(slices):
        return slices
    aug = build_augmentation(strength, hu_window=hu_window)
    images, labels, ids = [], [], []
    for k in range(1, views):
        for i, sid in enumerate(slices.ids):
            aug.reseed(int(np.random.SeedSequence([seed, *sid.encode(), k]).generate_state(1)[0]))
            image, label = aug(slices.images[i, 0].numpy(), slices.labels[i].numpy().astype(np.uint8))
            images.append(image)
            labels.append(label)
            ids.append(f"{sid}#aug{k}")
    return LabeledSlices(
        torch.cat([slices.images, torch.from_numpy(np.stack(images))[:, None]]),
        torch.cat([slices.labels, torch.from_numpy(np.stack(labels).astype(np.int64))]),
        (*slices.ids, *ids),
    )


def split_path(out_dir: str | os.PathLike[str]) -> Path:
    """Where :func:`~smp_diffusion_encoder.finetune.api.finetune` writes the split: ``out_dir/split.json``."""
    return Path(out_dir) / "split.json"
