"""Generation metrics as plain functions on feature arrays: FID, sFID, improved precision/recall, F1.

Definitions follow guided-diffusion's evaluator (Dhariwal & Nichol 2021), which the paper's numbers use:

- FID: Fréchet distance between Gaussians fitted to Inception-V3 pool features (2048-d) of real and
  generated images, ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``.
- sFID: the same on spatial features (first 7 channels of ``mixed_6/conv``, 17x17, flattened: 2023-d).
- Improved precision/recall (Kynkäänniemi et al. 2019), k = 3: each sample's manifold ball has the
  radius of its k-th nearest neighbour in its own set (itself excluded). Precision = fraction of
  generated samples inside some real ball; recall = fraction of real samples inside some generated ball.
- F1 = 2PR / (P + R).

The features come from :mod:`smp_diffusion_encoder.generation.inception`; nothing here knows a network.

Example:
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(500, 4))
    >>> abs(round(frechet_distance(*feature_statistics(a), *feature_statistics(a)), 6))
    0.0
    >>> precision_recall(a, a)
    (1.0, 1.0)
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import linalg

from smp_diffusion_encoder.errors import ConfigError


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, float64) of ``features (N, D)``, ``N >= 2``."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ConfigError(f"features must be (N, D) with N >= 2, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet (2-Wasserstein squared) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    Numerical fixes as in the reference implementations: if ``sqrtm(sigma1 @ sigma2)`` is not finite
    (singular product), ``eps * I`` is added to both covariances; a complex result with a negligible
    imaginary diagonal (``< 1e-3``) is replaced by its real part, a larger one raises ``ValueError``.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ConfigError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "singular matrix" from sqrtm: handled below
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(len(a), len(b))`` in float64, clamped at 0."""
    d = (a * a).sum(1)[:, None] - 2.0 * a @ b.T + (b * b).sum(1)[None, :]
    return np.maximum(d, 0.0)


def knn_radii(features: np.ndarray, k: int = 3, batch_size: int = 1024) -> np.ndarray:
    """Squared distance of each of ``features (N, D)`` to its k-th nearest neighbour (itself excluded)."""
    x = np.asarray(features, dtype=np.float64)
    if not 1 <= k < len(x):
        raise ConfigError(f"k must be in 1..{len(x) - 1} for {len(x)} samples, got {k}")
    radii = np.empty(len(x))
    for i in range(0, len(x), batch_size):
        d = _sq_distances(x[i : i + batch_size], x)
        # the k+1-th smallest value of a row is its k-th neighbour: the row's own 0 comes first
        radii[i : i + batch_size] = np.partition(d, k, axis=1)[:, k]
    return radii


def inside_manifold(manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Boolean ``(M,)``: is query ``j`` within ``radii[i]`` (squared) of some ``manifold[i]``?"""
    m = np.asarray(manifold, dtype=np.float64)
    q = np.asarray(queries, dtype=np.float64)
    out = np.empty(len(q), dtype=bool)
    for i in range(0, len(q), batch_size):
        out[i : i + batch_size] = (_sq_distances(q[i : i + batch_size], m) <= radii[None, :]).any(axis=1)
    return out


def precision_recall(
    real_features: np.ndarray, fake_features: np.ndarray, k: int = 3, batch_size: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall of ``fake_features (M, D)`` against ``real_features (N, D)``."""
    real = np.asarray(real_features, dtype=np.float64)
    fake = np.asarray(fake_features, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ConfigError(f"features must be (N, D) with equal D, got {real.shape} and {fake.shape}")
    precision = inside_manifold(real, knn_radii(real, k, batch_size), fake, batch_size).mean()
    recall = inside_manifold(fake, knn_radii(fake, k, batch_size), real, batch_size).mean()
    return float(precision), float(recall)


def f1_score(precision: float, recall: float) -> float:
    """``2PR / (P + R)`` (0 when both are 0)."""
    return 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class GenerationMetrics:
    """The paper's generation metrics (FID and sFID: lower is better; P, R, F1 in [0, 1]).

    ``fid`` / ``sfid`` are ``None`` when a set has no more images than the features have dimensions: the
    fitted covariance is then singular and its matrix square root meaningless; ``notes`` says so.
    """

    fid: float | None
    sfid: float | None
    precision: float
    recall: float
    f1: float
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


def generation_metrics(
    real_pool: np.ndarray,
    real_spatial: np.ndarray,
    fake_pool: np.ndarray,
    fake_spatial: np.ndarray,
    k: int = 3,
) -> GenerationMetrics:
    """All metrics from pool ``(N, 2048)`` and spatial ``(N, 2023)`` features of real and generated images."""
    notes = []

    def fd(name: str, real: np.ndarray, fake: np.ndarray) -> float | None:
        n, dim = min(len(real), len(fake)), real.shape[1]
        if n <= dim:
            notes.append(
                f"{name} not computed: {n} images per set do not determine a {dim}-d covariance (use more than {dim})"
            )
            return None
        return frechet_distance(*feature_statistics(real), *feature_statistics(fake))

    fid, sfid = fd("fid", real_pool, fake_pool), fd("sfid", real_spatial, fake_spatial)
    p, r = precision_recall(real_pool, fake_pool, k=k)
    return GenerationMetrics(fid=fid, sfid=sfid, precision=p, recall=r, f1=f1_score(p, r), notes=tuple(notes))


__all__ = [
    "GenerationMetrics",
    "f1_score",
    "feature_statistics",
    "frechet_distance",
    "generation_metrics",
    "inside_manifold",
    "knn_radii",
    "precision_recall",
]
