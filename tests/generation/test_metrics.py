"""Generation metrics on distributions whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from smp_diffusion_encoder.generation.metrics import (
    f1_score,
    feature_statistics,
    frechet_distance,
    generation_metrics,
    knn_radii,
    precision_recall,
)


def test_identical_sets_have_zero_fid() -> None:
    x = np.random.default_rng(0).normal(size=(2000, 16))
    assert abs(frechet_distance(*feature_statistics(x), *feature_statistics(x))) < 1e-8


def test_two_gaussians_match_the_closed_form_in_any_rotation() -> None:
    rng = np.random.default_rng(1)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(closed, rel=1e-9)
    # a common rotation keeps the distance, and S1 S2 is then not symmetric (the general sqrtm path)
    q = ortho_group.rvs(d, random_state=2)
    fd = frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    assert fd == pytest.approx(closed, rel=1e-7)
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-1.0]), np.array([[1.0]])) == pytest.approx(
        5.0
    )


def test_fid_from_samples_approaches_the_closed_form() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20000, 3)) * [1.0, 2.0, 0.5]
    y = rng.normal(size=(20000, 3)) * [1.0, 1.0, 0.5] + [0.5, 0, 0]
    assert frechet_distance(*feature_statistics(x), *feature_statistics(y)) == pytest.approx(0.25 + 1.0, abs=0.05)


def test_singular_covariances_use_the_offset() -> None:
    s = np.zeros((3, 3))
    s[0, 0] = 1.0  # rank 1: sqrtm of a singular product
    assert frechet_distance(np.zeros(3), s, np.ones(3), s) == pytest.approx(3.0, abs=1e-4)


def test_knn_radius_excludes_the_point_itself() -> None:
    x = np.arange(10.0)[:, None]
    np.testing.assert_array_equal(knn_radii(x, k=3), np.array([3, 2, 2, 2, 2, 2, 2, 2, 2, 3]) ** 2.0)


def test_precision_recall_known_answers() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(size=(60, 8))
    b = rng.normal(size=(60, 8)) + 100.0
    assert precision_recall(a, a, k=3) == (1.0, 1.0)
    assert precision_recall(a, b, k=3) == (0.0, 0.0)
    # mode dropping: the generator reproduces cluster A only -> every fake is real, half the real is missed
    real = np.concatenate([a, b])
    assert precision_recall(real, a, k=3) == (1.0, 0.5)
    # by hand on a line: real 0..9 (k=3 radius of point 9 is 3), fakes at 11.5 (inside) and 13 (outside)
    line = np.arange(10.0)[:, None]
    p, _ = precision_recall(line, np.array([[11.5], [13.0], [4.2], [-2.9]]), k=3, batch_size=3)
    assert p == 0.75


def test_f1_and_all_metrics_together() -> None:
    assert f1_score(0.5, 1.0) == pytest.approx(2 / 3) and f1_score(0.0, 0.0) == 0.0
    rng = np.random.default_rng(5)
    pool, spatial = rng.normal(size=(50, 16)), rng.normal(size=(50, 7))
    m = generation_metrics(pool, spatial, pool, spatial)
    assert abs(m.fid) < 1e-8 and abs(m.sfid) < 1e-8 and (m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0)
    few = generation_metrics(pool[:10], spatial[:10], pool[:10], spatial[:10])
    assert few.fid is None and few.sfid is not None and "10 images per set" in few.notes[0]
