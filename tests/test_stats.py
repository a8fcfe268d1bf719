"""Seed statistics against closed forms: the Student-t interval and Welch's test."""

import math

import pytest

from avid.metrics.stats import MeanCI, compare_to_reference, mean_ci, welch_p
from avid.metrics.tables import Row, best_within, markdown


def test_the_interval_is_mean_plus_minus_t_times_the_standard_error():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t_{0.975, 2} = 4.3027 (tables)
    assert mean_ci([5.0, 7.0, 5.0, 7.0, 6.0])[1] == pytest.approx(2.776445 / math.sqrt(5), rel=1e-6)  # s = 1, t_{0.975, 4}
    assert mean_ci([4.0, 4.0])[1] == 0.0
    assert math.isnan(mean_ci([3.0])[1])  # one seed: no interval
    assert mean_ci([1.0, math.inf])[0] == math.inf and math.isnan(mean_ci([1.0, math.inf])[1])
    with pytest.raises(ValueError, match="non-empty"):
        mean_ci([])


def test_welch_p_matches_the_closed_forms_of_the_t_distribution():
    # one group constant: Welch's df is the other group's n - 1, where the t CDF has a closed form
    t = 2 / math.sqrt(1 / 3)  # [1, 2, 3] vs [0, 0, 0]: df = 2, p = 1 - t / sqrt(2 + t^2)
    assert welch_p([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    assert welch_p([1.0, 3.0], [0.0, 0.0]) == pytest.approx(1 - 2 / math.pi * math.atan(2.0), rel=1e-9)  # df 1: Cauchy
    assert welch_p([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert math.isnan(welch_p([1.0], [2.0, 3.0])) and math.isnan(welch_p([1.0, 1.0], [2.0, 2.0]))
    assert math.isnan(welch_p([1.0, math.inf], [2.0, 3.0]))


def test_a_table_shows_mean_plus_minus_interval_marks_significant_differences_and_bolds_by_the_mean():
    summary = compare_to_reference({"avid": {"psnr": [18.0, 18.1, 17.9]}, "base": {"psnr": [17.0, 17.05, 16.95]},
                                    "poe": {"psnr": [18.2, 17.6, 17.9]}}, "avid")
    avid, base, poe = (summary[m]["psnr"] for m in ("avid", "base", "poe"))
    assert float(avid) == pytest.approx(18.0) and avid.p is None and not avid.significant
    assert base.p < 0.05 and base.significant and not poe.significant
    assert f"{base:.4g}" == "17 ± 0.12*" and f"{poe:.4g}".endswith("± 0.75")  # the interval to 2 digits
    assert f"{MeanCI([0.74601, 0.74604, 0.74598]):.4g}" == "0.746 ± 0.000075"
    assert f"{MeanCI([739.7, 739.7 + 1e-13, 739.7]):.4g}" == "739.7 ± 0"  # float noise of a constant
    rows = [Row(m, {"psnr": summary[m]["psnr"]}) for m in summary]
    assert best_within(rows, "psnr") == {0, 2}  # by the means: 18.0 and 17.9
    md = markdown(rows)
    assert "| avid | **18 ± 0.25** |" in md and "| base | 17 ± 0.12* |" in md
    assert isinstance(MeanCI([1.0, 2.0]), float) and repr(MeanCI([1.0, 2.0])) == "1.5"  # CSV / JSON get the mean
