"""The README's robot section runs, in order, at smoke-test size (``AVID_TINY=1``). It is apart from
tests/test_readme.py (its blocks use none of the others' outputs) so that the two run side by side."""

from __future__ import annotations

from tests.test_readme import README, bash_blocks, run_blocks, split_sections


def test_the_readme_robot_blocks_run_in_order_at_tiny_size(tmp_path, monkeypatch):
    blocks = bash_blocks(split_sections(README.read_text())[1])
    assert blocks
    _, ran = run_blocks(blocks, tmp_path, monkeypatch)
    assert {c[1] for c in ran if c[0] == "avid"} >= {"data", "codec", "pretrain", "classifier", "experiment"}
