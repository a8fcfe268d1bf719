"""Action aliasing measured from the environment: buttons that give identical frames from the same
state form classes, and they cap the accuracy any action classifier can reach."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avid.cli import main
from avid.data.aliasing import BUTTONS, AliasingSpec, load_classes, partitions, save, summarise

NONE, D, E = BUTTONS.index("none"), BUTTONS.index("D"), BUTTONS.index("E")


def test_classes_and_ceilings_on_hand_made_partitions():
    # state 1: buttons 0-4 alike, 5-14 alike (2 groups); state 2: every button distinct (15 groups)
    groups = np.array([[0] * 5 + [1] * 10, list(range(15))])
    r = summarise(AliasingSpec(states=2), groups)
    assert r.classes == [[0], [1], [2], [3], [4], *([b] for b in range(5, 15))]  # alike everywhere: none merged
    assert r.ceiling_buttons == pytest.approx((2 / 15 + 15 / 15) / 2)
    # over classes (all singletons): state 1 names one class per group -> 2 / 15, state 2 -> 1
    assert r.ceiling_classes == pytest.approx((2 / 15 + 1) / 2)
    # merge 5-14 in both states: one class of 10, ceiling over classes in state 1 = (1 + 10) / 15
    groups[1, 5:] = 5
    r = summarise(AliasingSpec(states=2), groups)
    assert r.classes[-1] == list(range(5, 15)) and r.class_of[14] == r.class_of[5]
    assert r.ceiling_classes == pytest.approx(((1 + 10) / 15 + (5 + 10) / 15) / 2)
    assert r.chance_classes == pytest.approx(10 / 15)
    # with a tolerance of one state in two, 0-4 join too (alike in state 1 only)
    assert len(summarise(AliasingSpec(states=2), groups, tolerance=0.5).classes) == 2


def test_coinrun_letter_buttons_do_what_no_button_does_and_left_is_not_right():
    groups = partitions(AliasingSpec(states=12, num_levels=5))
    assert groups.shape == (12, 15)
    assert (groups[:, D:E + 1] == groups[:, [NONE]]).all()  # D, A, W, S, Q, E: no-ops in Coinrun
    left, right = BUTTONS.index("left"), BUTTONS.index("right")
    assert (groups[:, left] != groups[:, right]).mean() > 0.5


def test_the_command_writes_classes_that_the_evaluation_reads(tmp_path, capsys):
    out = tmp_path / "coinrun.json"
    main(["classifier", "aliasing", "--states", "6", "--levels", "50000:50003", "--out", str(out)])
    text = capsys.readouterr().out
    assert "ceiling (perfect classifier)" in text and (tmp_path / "coinrun.md").exists()
    class_of = load_classes(out)
    assert class_of[D] == class_of[NONE] and max(class_of) + 1 == len(json.loads(out.read_text())["classes"])
    (tmp_path / "bad.json").write_text('{"class_of": [0, 2]}')
    with pytest.raises(ValueError, match="class 0..k-1 for each of 15"):
        load_classes(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="not an action-aliasing report"):
        load_classes(tmp_path / "missing.json")


def test_the_shipped_coinrun_classes_are_a_report_of_this_format():
    class_of = load_classes("assets/coinrun-action-aliasing.json")
    assert class_of[D] == class_of[NONE] != class_of[BUTTONS.index("left")]


def test_save_round_trips(tmp_path):
    r = summarise(AliasingSpec(states=1), np.array([list(range(15))]))
    assert load_classes(save(r, tmp_path / "a.json")) == list(range(15))


def test_classifier_eval_scores_over_the_shipped_classes(tmp_path, capsys):
    from avid.data.procgen import ProcgenSpec, generate

    generate(ProcgenSpec(["coinrun"], 30000, 100, trajectories=4, seed=5), tmp_path / "test")
    main(["classifier", "eval", "--data", str(tmp_path / "test"), "--classes", "assets/coinrun-action-aliasing.json"])
    line = capsys.readouterr().out
    accuracy = float(line.split("action classes of assets/coinrun-action-aliasing.json: ")[1].split()[0])
    assert 0 <= accuracy <= 1 and "over the 9 action classes" in line
