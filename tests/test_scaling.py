"""`avid experiment scaling` on tiny settings: one run resumed up a 2-rung ladder, every rung measured
on the validation split beside the base model and copy-last-frame; a rerun trains and samples nothing,
a longer ladder trains only the new rung, and a changed set-up is refused rather than mixed in."""

import csv

import pytest
import yaml

import avid.pipelines.budget
import avid.pipelines.evaluate
from avid.pipelines.evaluate import COPY_LAST
from avid.pipelines.scaling import load_scaling, run_scaling
from tests.conftest import TINY_UNET, make_base, make_store


def tiny_scaling(tmp_path, more=()):
    if not (tmp_path / "base").exists():
        make_base(tmp_path / "base")
        make_store(tmp_path / "data")
        make_store(tmp_path / "val", seed=1)
        (tmp_path / "tiny-sizes.yaml").write_text(yaml.safe_dump({"base_unet": TINY_UNET,
                                                                   "methods": {"avid": TINY_UNET}}))
    return load_scaling(None, [
        "name=tiny", f"runs={tmp_path / 'runs'}", f"reports={tmp_path / 'reports'}", f"sizes={tmp_path / 'tiny-sizes.yaml'}",
        "ladder=[1, 2]", "val_size=2", "loss_windows=3", "options={residual: true}",
        f"data.train={tmp_path / 'data'}", f"data.val={tmp_path / 'val'}", f"run.base={tmp_path / 'base'}",
        "run.data.frames=6", "run.train.batch_size=2", "run.train.precision=32-true", "run.train.progress=false",
        "run.train.ckpt_every=1", "run.train.log_every=1", "run.train.warmup_steps=1", "run.sample.steps=2",
        "run.sample.batch_size=4", *more])


def rows(report):
    with open(report / "scaling.csv") as f:
        return list(csv.DictReader(f))


def test_the_ladder_resumes_one_run_measures_every_rung_and_a_rerun_redoes_nothing(tmp_path, monkeypatch):
    cfg = tiny_scaling(tmp_path)
    report = run_scaling(cfg)
    run = tmp_path / "runs" / "tiny" / "avid"

    first = rows(report)
    assert [(r["method"], r["steps"]) for r in first] == [("avid", "1"), ("avid", "2"), ("base", ""), (COPY_LAST, "")]
    avid1, avid2, base, copy = first
    for r in (avid1, avid2, base):
        assert all(float(r[k]) > 0 for k in ("psnr", "psnr_ci95", "ssim_ci95", "loss"))
        assert (r["val_trajectories"], r["loss_windows"]) == ("2", "3")
    assert copy["loss"] == "" and float(copy["psnr"]) > float(base["psnr"])  # a tiny random base: worse than copying
    assert 0 < float(avid1["cpu_minutes"]) < float(avid2["cpu_minutes"])  # cumulative training compute
    assert (report / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one run, resumed: two training segments into one folder, the adapter as configured
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["step"] == 2 and config["options"]["residual"] is True
    assert config["run"]["train"]["lr_schedule"] == "constant"
    assert sorted(p.name for p in (run / "logs").glob("version_*")) == ["version_0", "version_1"]
    readme = (report / "README.md").read_text()
    assert "validation split: 2 trajectories of synthetic data" in readme and "CPU-minutes" in readme
    assert (report / "steps-1" / "samples.gif").exists() and (report / "steps-2" / "metrics.md").exists()

    def fail(*args, **kwargs):
        raise AssertionError("a measured rung was trained or sampled again")

    monkeypatch.setattr(avid.pipelines.budget, "train", fail)
    monkeypatch.setattr(avid.pipelines.evaluate, "sample_videos", fail)
    run_scaling(cfg)
    assert rows(report) == first

    # a longer ladder trains and measures only the new rung, on from the last one
    monkeypatch.undo()
    longer = run_scaling(tiny_scaling(tmp_path, ["ladder=[1, 2, 3]"]))
    third = rows(longer)
    assert [r["steps"] for r in third if r["method"] == "avid"] == ["1", "2", "3"]
    assert third[:2] == first[:2]
    assert len(list((run / "logs").glob("version_*"))) == 3


def test_a_changed_set_up_is_refused_and_a_decaying_schedule_is_rejected(tmp_path):
    run_scaling(tiny_scaling(tmp_path, ["ladder=[1]"]))
    with pytest.raises(ValueError, match="another set-up .*run"):
        run_scaling(tiny_scaling(tmp_path, ["ladder=[1, 2]", "run.train.lr=0.5"]))
    with pytest.raises(ValueError, match="lr_schedule must be 'constant'"):
        tiny_scaling(tmp_path, ["run.train.lr_schedule=cosine"])
    with pytest.raises(ValueError, match="ladder must be increasing"):
        tiny_scaling(tmp_path, ["ladder=[4, 2]"])


def test_the_cpu_config_and_the_command_line(monkeypatch):
    from avid.pipelines import scaling
    from avid.cli import main

    cfg = load_scaling("configs/experiments/scaling-cpu.yaml")
    assert cfg.ladder == [250, 500, 1000, 2000, 4000] and cfg.data.val_preset == "coinrun-val"
    assert cfg.options["motion"] == "shift" and cfg.run.train.loss_weighting == "truncated_snr"  # the quickstart's
    assert cfg.run.train.lr_schedule == "constant" and cfg.method == "avid"
    seen = {}
    monkeypatch.setattr(scaling, "run_scaling", lambda cfg, command: seen.update(cfg=cfg, command=command))
    main(["experiment", "scaling", "--ladder", "10,20", "--val-size", "8", "--threads", "1", "run.sample.steps=5"])
    assert (seen["cfg"].ladder, seen["cfg"].val_size, seen["cfg"].run.sample.steps) == ([10, 20], 8, 5)
    assert seen["command"] == "avid experiment scaling --ladder 10,20 --val-size 8 --threads 1 run.sample.steps=5"


def test_a_report_begun_before_an_option_existed_still_accepts_its_rungs():
    from avid.pipelines.scaling import _differences

    old = {"run": {"train": {"lr": 5e-4}, "method": {"options": {"mults": [1, 2]}}}}
    assert _differences(old, {"run": {"train": {"lr": 5e-4, "compile": False}, "codec": None,
                                      "method": {"options": {"mults": [1, 2]}}}}) == []
    assert _differences(old, {"run": {"train": {"lr": 1e-3}, "method": {"options": {"mults": [1, 2]}}}}) == \
        ["run.train.lr: 0.0005 -> 0.001"]
    assert _differences(old, {"run": {"train": {"lr": 5e-4, "compile": True}, "method": {"options": {"mults": [1, 2]}}}})
