"""The README's step-by-step path, its Coinrun comparison and the evaluation of the comparison's runs
(``GROUPS["comparison"]`` in tests/test_readme.py) run in order at smoke-test size (``AVID_TINY=1``).
They are apart from the README's other blocks (which use none of their outputs) so that the groups
run side by side."""

from __future__ import annotations

from tests.test_readme import group_blocks, run_blocks


def test_the_readme_comparison_blocks_run_in_order_at_tiny_size(tmp_path, monkeypatch):
    blocks = group_blocks("comparison")
    assert len(blocks) >= 3
    clone, ran = run_blocks(blocks, tmp_path, monkeypatch)
    assert {c[1] for c in ran if c[0] == "avid"} >= {"data", "pretrain", "train", "sample", "eval", "bench",
                                                      "experiment"}
    # the step-by-step run, the comparison's tables and the evaluation of the comparison's runs
    for report in ("reports/avid/metrics.md", "reports/coinrun-cpu/table1.md", "reports/mine/metrics.md"):
        assert (clone / report).is_file(), report
