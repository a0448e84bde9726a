"""Contrast-phase simulation: shift each labeled organ's HU by a random, physiologically plausible enhancement.

A scan's contrast phase changes organ brightness far more than anything else between hospitals: without
contrast the liver is about 50-60 HU and the kidneys 30-40 HU; in the portal-venous phase the liver gains about
60 HU, the spleen about 80-115, the kidneys 150-215 and the aorta 120-330. A model trained on a few slices of one
non-contrast scan has only ever seen the first appearance. :func:`simulate_enhancement` rewrites a labeled slice
as if it had been acquired in another phase (or without contrast, when the labeled scan is enhanced), so the
labels teach both appearances.

**The model.** For each organ ``o`` with a row in :data:`ENHANCEMENT`:

1. its current enhancement is estimated from the slice: ``e_src = clip(median HU of its voxels - baseline_o, 0,
   peak_o)`` (a non-contrast organ has ``e_src = 0``);
2. a target enhancement is drawn: one *phase level* ``u ~ U(0, 1)`` per call is shared by all organs (a scan has
   one phase), each organ's level is ``clip(u + N(0, jitter), 0, 1)`` (organs peak at different times: arterial
   vs portal-venous), and ``e_tgt = level_o * peak_o``;
3. the organ's voxels move by ``e_tgt - e_src`` HU, but only voxels in the soft-tissue range
   :data:`TISSUE_HU` (gas, fat inside a bowel label, bone and oral contrast keep their values: contrast media
   enhance perfused tissue, not lumen contents); the shift field is smoothed by a Gaussian of
   ``edge_sigma_px`` pixels so organ borders blur like partial-volume voxels instead of showing label edges.

Organs without a row (and label ids outside FLARE 2022's 1..13) are left alone; so is every unlabeled voxel.

**Sources of the ranges** (enhancement = HU above the unenhanced value, maxima over phases, rounded):

* aorta 335: Goshima et al., AJR 2006;187:W25-W32 (aortic enhancement 300-336 HU in the arterial phase, 117-125
  in the portal-venous phase); Kanematsu et al., J Comput Assist Tomogr 2005;29:195-201 (273-301 HU);
* spleen 115 and liver 65: Kanematsu et al. 2005 (splenic peak 115 HU); Goshima et al. 2006 (splenic 97-108 HU
  arterial, 73-82 portal-venous; liver peaking at 59-63 HU in the portal-venous phase, 15-25 HU earlier);
* kidneys 215: PubMed 17367973 (three-phase renal MDCT with bolus tracking, 128 patients: cortical enhancement
  195-217 HU, medulla 145 HU in the nephrographic phase);
* unenhanced baselines: liver 50-70 HU, about 10 HU above the spleen; kidneys 30-50 HU (standard CT anatomy,
  e.g. the normal-appearance chapters of abdominal imaging textbooks);
* IVC 130, pancreas 100, adrenal glands 60, oesophagus, stomach and duodenum walls 60: **approximate**, no
  measurement in the sources above (IVC taken from portal-vein enhancement, 75-104 HU arterial in Goshima et
  al. 2006, rising later; pancreas and bowel wall from their known moderate enhancement); gallbladder bile does
  not enhance (peak 0).

The ranges were set from these sources before any experiment and were not tuned on any scan.

Example:
    >>> hu = np.full((32, 32), -100.0, np.float32); mask = np.zeros((32, 32), np.uint8)
    >>> hu[8:24, 8:24], mask[8:24, 8:24] = 45.0, 1               # a non-contrast "liver"
    >>> out = simulate_enhancement(hu, mask, np.random.default_rng(0))
    >>> 45.0 <= float(np.median(out[12:20, 12:20])) <= 45.0 + ENHANCEMENT[1].peak
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Voxels of an organ in this HU range are shifted; gas, fat, bone and positive oral contrast are not.
TISSUE_HU: tuple[float, float] = (-80.0, 400.0)


@dataclass(frozen=True)
class Enhancement:
    """One organ's contrast behaviour: unenhanced mean HU (``baseline``) and peak enhancement (HU above it)."""

    baseline: float
    peak: float


#: FLARE 2022 id -> :class:`Enhancement` (see the module docstring for the sources).
ENHANCEMENT: dict[int, Enhancement] = {
    1: Enhancement(55.0, 65.0),  # liver
    2: Enhancement(35.0, 215.0),  # right kidney
    3: Enhancement(45.0, 115.0),  # spleen
    4: Enhancement(40.0, 100.0),  # pancreas (approximate)
    5: Enhancement(40.0, 335.0),  # aorta
    6: Enhancement(40.0, 130.0),  # inferior vena cava (approximate)
    7: Enhancement(25.0, 60.0),  # right adrenal gland (approximate)
    8: Enhancement(25.0, 60.0),  # left adrenal gland (approximate)
    9: Enhancement(10.0, 0.0),  # gallbladder: bile does not enhance
    10: Enhancement(35.0, 60.0),  # esophagus wall (approximate)
    11: Enhancement(35.0, 60.0),  # stomach wall (approximate)
    12: Enhancement(35.0, 60.0),  # duodenum wall (approximate)
    13: Enhancement(35.0, 215.0),  # left kidney
}


def simulate_enhancement(
    hu: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    jitter: float = 0.2,
    edge_sigma_px: float = 0.75,
    min_voxels: int = 4,
    organs: Sequence[int] | None = None,
) -> np.ndarray:
    """One slice re-phased: ``hu`` ``(H, W)`` HU, ``labels`` ``(H, W)`` FLARE ids -> ``(H, W)`` float32 HU.

    See the module docstring for the model. ``jitter``: standard deviation of each organ's level around the
    shared phase level; ``edge_sigma_px``: smoothing of the shift field (pixels); organs with fewer than
    ``min_voxels`` tissue voxels in the slice are left alone (their median is not a measurement). ``organs``:
    the label ids to draw a level for, in this order (default: those in ``labels``); slices of one stack given
    the same ``organs`` and the same ``rng`` state get the same phase and organ levels (neighbouring slices
    re-phased together).

    Raises:
        ValueError: ``hu`` and ``labels`` differ in shape or are not 2D.
    """
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 2 or hu.shape != labels.shape:
        raise ValueError(
            f"simulate_enhancement needs (H, W) HU and labels of one shape, got {hu.shape}, {labels.shape}"
        )
    phase = rng.uniform(0.0, 1.0)
    tissue = (hu >= TISSUE_HU[0]) & (hu <= TISSUE_HU[1])
    shift = np.zeros_like(hu)
    for organ in np.unique(labels) if organs is None else organs:
        behaviour = ENHANCEMENT.get(int(organ))
        level = float(np.clip(phase + rng.normal(0.0, jitter), 0.0, 1.0))  # drawn for every organ: same stream
        if behaviour is None:
            continue
        inside = (labels == organ) & tissue
        if inside.sum() < min_voxels:
            continue
        current = float(np.clip(np.median(hu[inside]) - behaviour.baseline, 0.0, behaviour.peak))
        shift[inside] = level * behaviour.peak - current
    if edge_sigma_px > 0 and shift.any():
        shift = ndimage.gaussian_filter(shift, edge_sigma_px, mode="constant")
    return np.where(tissue, hu + shift, hu).astype(np.float32)
