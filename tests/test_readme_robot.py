"""The README's robot section runs, in order, at smoke-test size (``AVID_TINY=1``), once per test
session, in a clone of its own (``GROUPS["robot"]`` in tests/test_readme.py: its blocks use none of the
others' outputs, so the groups run side by side). On what it made, the robot domain's documented
configs are checked: the codec, the latent base model (Table 9's v prediction, linear schedule, 16
frames), the Action Error Ratio's regressor, a sample from the base model and the robot comparison
(Tables 2 and 3) with two seeds; the robot quickstart's report, made with the shipped models."""

from __future__ import annotations

import pytest

import csv

from avid.blackbox import open_denoiser
from avid.checkpoint import load_config
from avid.cli import main
from avid.metrics.action_classifier import load_classifier
from tests.test_readme import group_blocks, run_blocks


@pytest.fixture(scope="module")
def robot_clone(tmp_path_factory):
    """The clone the README's robot blocks ran in, and the commands run."""
    with pytest.MonkeyPatch.context() as mp:
        return run_blocks(group_blocks("robot"), tmp_path_factory.mktemp("readme-robot"), mp)


def test_the_readme_robot_blocks_run_in_order_at_tiny_size(robot_clone):
    _, ran = robot_clone
    assert {c[1] for c in ran if c[0] == "avid"} >= {"quickstart", "data", "codec", "pretrain", "export", "classifier",
                                                      "experiment"}


def test_the_robot_quickstart_trains_avid_against_the_shipped_latent_base_and_reports_decoded_frames(robot_clone):
    """``avid quickstart --domain robot``: an AVID adapter trained through the black box of the shipped
    latent base model (in its codec's latent space), scored on decoded frames against the base alone
    and copy-last-frame, with the Action Error Ratio of the shipped 7-D regressor (a number: MAE
    generated / real, not "n/a")."""
    clone, ran = robot_clone
    assert ["avid", "quickstart", "--domain", "robot"] in ran
    run = load_config(clone / "runs/quickstart-robot/avid")
    assert (run["base"], run["method"], run["action_kind"], run["num_actions"]) == ("assets/base-robot", "avid",
                                                                                    "continuous", 7)
    assert run["channels"] == 4  # the codec's latent channels: the adapter never sees pixels
    report = clone / "reports/quickstart-robot"
    rows = {r["method"]: r for r in csv.DictReader((report / "metrics.csv").open())}
    assert {"base", "avid", "copy last frame"} <= set(rows)
    assert all(float(rows[m]["aer"]) > 0 for m in ("base", "avid"))
    assert float(rows["avid"]["psnr"]) > 5  # decoded 64x64 frames against the ground truth
    assert "robot-arm" in (report / "metrics.md").read_text()
    assert "avid quickstart --domain robot" in (report / "README.md").read_text()


def test_the_robot_configs_reproduce_a_codec_a_latent_base_model_and_a_regressor(robot_clone, monkeypatch, capsys):
    clone, _ = robot_clone
    monkeypatch.chdir(clone)
    monkeypatch.setattr("avid.checkpoint.REPO_ROOT", clone)
    monkeypatch.setenv("AVID_TINY", "1")
    spec = open_denoiser(clone / "runs/base-robot-cpu", precision="fp32").spec
    assert spec.latent and (spec.channels, spec.frame_size, spec.pixel_size) == (4, 16, 64)
    assert spec.diffusion.param == "v" and spec.diffusion.schedule == "linear" and spec.diffusion.num_steps == 1000
    regressor = load_classifier(clone / "runs/action-regressor-robot-cpu")
    assert not regressor.discrete and regressor.cfg.num_actions == 7 and regressor.cfg.frames == 16
    main(["sample", "--checkpoint", "runs/base-robot-cpu", "--data", "data/robot-target-test-cpu", "--out", "samples"])
    assert "2 videos" in capsys.readouterr().out and (clone / "samples/samples.gif").is_file()
    main(["experiment", "robot", "--methods", "avid,avid-no-mask,poe", "--seeds", "0,1", "--eval-size", "2",
          "--sweep-size", "2", "metrics.perceptual=false"])
    report = clone / "reports/robot-cpu"
    table = (report / "table1.md").read_text()
    assert "Table 2 layout" in table and "Table 3 layout" in (report / "table3-ablations.md").read_text()
    rows = {line.split(",")[0] for line in (report / "table1.csv").read_text().splitlines()[1:]}
    assert {"avid", "poe", "base"} <= rows and "Action Err. Ratio" in table
    assert "MAE generated / real" in (report / "README.md").read_text()  # the AER of the 7-D regressor
    assert (report / "seeds.csv").is_file()  # two seeds: mean and 95% interval


def test_the_readme_codec_eval_scores_the_shipped_codec_beside_copy_last(robot_clone):
    clone, ran = robot_clone
    assert any(c[:3] == ["avid", "codec", "eval"] for c in ran)
    from avid.pipelines.evaluate import COPY_LAST, COPY_LAST_CODEC

    rows = {r["method"] for r in csv.DictReader((clone / "reports/codec/codecs.csv").open())}
    assert rows == {COPY_LAST, "assets/base-robot: reconstruction", f"assets/base-robot: {COPY_LAST_CODEC}"}
