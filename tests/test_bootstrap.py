"""Bootstrap confidence intervals (percentile, paired) and their place beside every Action Error Ratio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avid.metrics.action_classifier import action_accuracy, action_scores
from avid.metrics.bootstrap import bootstrap_ci, format_ci, ratio_of_means
from avid.metrics.tables import Row, markdown, to_csv
from tests.test_action_classifier import constant, tiny, toy_batch


def test_the_interval_of_a_mean_matches_the_normal_approximation():
    x = np.random.default_rng(1).normal(3.0, 2.0, 400)
    lo, hi = bootstrap_ci(np.mean, x, samples=4000)
    half = 1.96 * x.std() / np.sqrt(len(x))
    assert lo < x.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert bootstrap_ci(np.mean, x, samples=4000) == (lo, hi)  # seeded: reproducible


def test_paired_resampling_keeps_pairs_together():
    a = np.arange(50, dtype=float)
    # the ratio of a set to itself is exactly 1 in every paired resample, never otherwise
    assert bootstrap_ci(ratio_of_means, a + 1, a + 1) == (1.0, 1.0)


def test_a_zero_denominator_widens_the_upper_end_to_inf():
    real, generated = np.array([1.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0])
    lo, hi = bootstrap_ci(ratio_of_means, real, generated, samples=500)
    assert hi == np.inf and 1.0 <= lo < 3.01
    assert format_ci((1.23456, np.inf)) == "[1.235, inf]"


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="one non-zero length"):
        bootstrap_ci(ratio_of_means, np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(np.mean, np.ones(3), level=95)


def test_per_video_scores_average_to_the_accuracy_and_classes_merge_actions():
    b = toy_batch(n=4)
    b.actions[:] = torch.tensor([[2, 2, 0, 1]] * 3 + [[2, 2, 2, 2]])
    clf = constant(tiny(), [0.0, 0.0, 5.0, 0.0, 0.0])  # always answers 2
    per_video = action_scores(clf, b.first, b.x0, b.actions)
    assert per_video.tolist() == [0.5, 0.5, 0.5, 1.0]
    assert float(per_video.mean()) == pytest.approx(action_accuracy(clf, b.first, b.x0, b.actions))
    # with actions 0 and 2 one class, "2" also names the transitions of action 0
    assert action_scores(clf, b.first, b.x0, b.actions, classes=[0, 1, 0, 2, 3]).tolist() == [0.75] * 3 + [1.0]
    # a class wins on summed probability: 3 actions at 0.2 beat one at 0.4
    clf = constant(tiny(), [0.0, 0.0, 0.0, float(np.log(2)), -30.0])
    b.actions[:] = 0
    assert action_accuracy(clf, b.first, b.x0, b.actions, classes=[0, 0, 0, 1, 2]) == 1.0
    with pytest.raises(ValueError, match="one class per action"):
        action_scores(clf, b.first, b.x0, b.actions, classes=[0, 1])


def test_the_table_prints_the_interval_beside_the_ratio():
    rows = [Row("avid", {"aer": 1.25, "aer_ci": (1.1, 1.42), "ssim": 0.5}),
            Row("base", {"aer": 1.5, "aer_ci": (1.31, 1.8), "ssim": 0.4})]
    md = markdown(rows)
    assert "| avid | **1.25** [1.1, 1.42] | **0.5** |" in md and "| base | 1.5 [1.31, 1.8] | 0.4 |" in md
    assert "95% percentile-bootstrap interval" in md and "aer_ci" not in md.split("\n")[0]
    csv = to_csv(rows).splitlines()
    assert csv[0] == "method,trainable_params,needs_parameters,aer,ssim,aer_ci_low,aer_ci_high"
    assert csv[1] == "avid,,0,1.25,0.5,1.1,1.42"
