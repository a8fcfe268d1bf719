"""Normalised scores (paper section 9.4): direction-aware min-max, averaged over shared metrics."""

from __future__ import annotations

import math

import pytest

from avid.metrics.normalise import PAPER_BOUNDS, normalised_scores

NA = "n/a (weights not found: vgg.pth in /w)"


def test_hand_computed_example():
    values = {
        "A": {"fvd": 10.0, "ssim": 0.80, "lpips": NA},
        "B": {"fvd": 30.0, "ssim": 0.60, "lpips": 0.2},
        "C": {"fvd": 20.0, "ssim": 0.75, "lpips": 0.3},
    }
    res = normalised_scores(values)
    # fvd (lower is better, eq. 8): A 1, B 0, C 1 - 10/20 = 0.5
    # ssim (higher is better, eq. 7): A 1, B 0, C 0.15/0.20 = 0.75
    assert res.metrics == ["fvd", "ssim"]
    assert res.normalised["C"] == pytest.approx({"fvd": 0.5, "ssim": 0.75})
    assert res.scores == pytest.approx({"A": 1.0, "B": 0.0, "C": 0.625})
    assert res.bounds == {"fvd": (10.0, 30.0), "ssim": (0.6, 0.8)}
    assert res.skipped == {"lpips": "not a number for A"}  # n/a for one method: out for all


def test_equal_values_and_unknown_directions_are_left_out():
    values = {"A": {"psnr": 20.0, "fid": 5.0, "mine": 1.0}, "B": {"psnr": 20.0, "fid": 7.0, "mine": 2.0}}
    res = normalised_scores(values, metrics=["psnr", "fid", "mine"])
    assert res.metrics == ["fid"]
    assert set(res.skipped) == {"psnr", "mine"}
    assert res.scores == {"A": 1.0, "B": 0.0}
    assert normalised_scores(values, metrics=["mine"], higher_is_better={"mine": True}).scores == {"A": 0.0, "B": 1.0}


def test_fixed_bounds_from_the_paper():
    # AVID 22M on Coinrun500k (paper Table 1) under the paper's Coinrun range (Table 11)
    avid = {"aer": 1.257, "psnr": 22.4}
    res = normalised_scores({"AVID": avid}, bounds=PAPER_BOUNDS["coinrun"])
    aer = 1 - (1.257 - 1.154) / (1.574 - 1.154)
    psnr = (22.4 - 17.2) / (25.7 - 17.2)
    assert res.normalised["AVID"] == pytest.approx({"aer": aer, "psnr": psnr})
    assert res.scores["AVID"] == pytest.approx((aer + psnr) / 2)


def test_no_usable_metric_gives_nan():
    assert math.isnan(normalised_scores({"A": {"fid": 3.0}}).scores["A"])  # one method: no range
