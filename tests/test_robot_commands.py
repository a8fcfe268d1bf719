"""The robot domain's documented commands run as written, at smoke-test size (``AVID_TINY=1``):
the datasets from their presets, the codec, the latent base model (Table 9's v prediction, linear
schedule, 16 frames), the Action Error Ratio's regressor, a sample from the base model and the
robot comparison (Tables 2 and 3) with two seeds."""

import pytest

from avid.blackbox import open_denoiser
from avid.checkpoint import REPO_ROOT
from avid.cli import main
from avid.metrics.action_classifier import load_classifier

pytest.importorskip("pybullet")


def test_the_robot_configs_reproduce_a_codec_a_latent_base_model_and_a_regressor(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AVID_TINY", "1")
    for preset in ("robot-pretrain-cpu", "robot-pretrain-val", "robot-target-cpu", "robot-target-test"):
        main(["data", "robot", "--preset", preset, "--out", f"data/{preset}"])
    main(["codec", "train", "--config", str(REPO_ROOT / "configs/robot/codec-cpu.yaml")])
    main(["pretrain", "--config", str(REPO_ROOT / "configs/robot/base-cpu.yaml"), "--set", "train.progress=false"])
    main(["classifier", "train", "--config", str(REPO_ROOT / "configs/classifier/robot-cpu.yaml")])
    spec = open_denoiser(tmp_path / "runs/base-robot-cpu", precision="fp32").spec
    assert spec.latent and (spec.channels, spec.frame_size, spec.pixel_size) == (4, 16, 64)
    assert spec.diffusion.param == "v" and spec.diffusion.schedule == "linear" and spec.diffusion.num_steps == 1000
    regressor = load_classifier(tmp_path / "runs/action-regressor-robot-cpu")
    assert not regressor.discrete and regressor.cfg.num_actions == 7 and regressor.cfg.frames == 16
    main(["sample", "--checkpoint", "runs/base-robot-cpu", "--data", "data/robot-target-test", "--out", "samples"])
    assert "2 videos" in capsys.readouterr().out and (tmp_path / "samples/samples.gif").is_file()
    main(["experiment", "robot", "--methods", "avid,avid-no-mask,poe", "--seeds", "0,1", "--eval-size", "2",
          "--sweep-size", "2", "metrics.perceptual=false"])
    report = tmp_path / "reports/robot-cpu"
    table = (report / "table1.md").read_text()
    assert "Table 2 layout" in table and "Table 3 layout" in (report / "table3-ablations.md").read_text()
    rows = {line.split(",")[0] for line in (report / "table1.csv").read_text().splitlines()[1:]}
    assert {"avid", "poe", "base"} <= rows and "Action Err. Ratio" in table
    assert "MAE generated / real" in (report / "README.md").read_text()  # the AER of the 7-D regressor
    assert (report / "seeds.csv").is_file()  # two seeds: mean and 95% interval
