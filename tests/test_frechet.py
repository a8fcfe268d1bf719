"""The Fréchet distance matches its closed forms for Gaussians and is zero between identical sets."""

from __future__ import annotations

import numpy as np
import pytest

from avid.metrics.frechet import frechet_distance, frechet_distance_from_stats, gaussian_stats


def test_1d_closed_form():
    m1, s1, m2, s2 = 0.3, 1.7, -1.1, 0.4
    expected = (m1 - m2) ** 2 + s1**2 + s2**2 - 2 * s1 * s2
    assert frechet_distance_from_stats([m1], [[s1**2]], [m2], [[s2**2]]) == pytest.approx(expected, rel=1e-12)


def test_diagonal_covariances_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    got = frechet_distance_from_stats(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_non_commuting_covariances_2x2():
    # for 2x2, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) with M = S1 S2 (real, non-negative eigenvalues)
    s1 = np.array([[2.0, 0.9], [0.9, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 1.5]])
    m = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    mu1, mu2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_identical_sets_give_zero_even_with_singular_covariance():
    x = np.random.default_rng(1).normal(size=(20, 64)) * 3  # N < D: rank-deficient covariance
    stats = gaussian_stats(x)
    assert abs(frechet_distance(x, x.copy())) < 1e-9 * np.trace(stats[1])
    assert abs(frechet_distance_from_stats(*stats, *stats)) < 1e-9 * np.trace(stats[1])


def test_low_rank_route_equals_the_covariance_route():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(20, 64)), rng.normal(0.5, 1.5, size=(25, 64))  # fewer samples than dimensions
    assert frechet_distance(x, y) == pytest.approx(frechet_distance_from_stats(*gaussian_stats(x), *gaussian_stats(y)),
                                                   rel=1e-8)


def test_translated_set_gives_squared_shift():
    x = np.random.default_rng(2).normal(size=(50, 8))
    c = np.linspace(-1, 1, 8)
    assert frechet_distance(x, x + c) == pytest.approx(float(c @ c), rel=1e-8)


def test_symmetric_and_from_torch():
    import torch

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(40, 5)), rng.normal(1, 2, size=(30, 5))
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(
        frechet_distance(a, b), rel=1e-5)


@pytest.mark.parametrize("a,b", [((1, 4), (5, 4)), ((5, 4), (5, 3)), ((5,), (5,))])
def test_bad_shapes_raise(a, b):
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(a), np.zeros(b))
