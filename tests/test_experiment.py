"""`avid experiment coinrun` end to end on tiny settings: every method trained on the same data for
the same steps, the sweeps choose from the paper's grids, the tables have the paper's layout, and a
rerun trains nothing and samples nothing."""

import csv
import json
import re

import pytest
import torch
import yaml

import avid.pipelines.budget
import avid.pipelines.evaluate
from avid.diffusion import Diffusion, DiffusionConfig
from avid.pipelines import experiment
from avid.pipelines.evaluate import COPY_LAST
from avid.pipelines.experiment import method_run_config, run_experiment
from avid.pipelines.experiment_config import load_experiment
from avid.methods import COMPARED as DEFAULT_METHODS
from avid.methods.sizes import load_size_preset
from avid.methods.sweeps import PAPER_SWEEPS
from avid.metrics import packaged
from avid.metrics.action_classifier import ActionClassifier, ClassifierConfig, save_classifier
from tests.conftest import TINY_UNET, make_base, make_store

NEEDS_PARAMETERS = {"controlnet", "controlnet-small", "finetune"}


def tiny_experiment(tmp_path, more=()):
    base, data = make_base(tmp_path / "base"), make_store(tmp_path / "data").root
    val, test = make_store(tmp_path / "val", seed=1).root, make_store(tmp_path / "test", seed=2).root
    sizes = {"base_unet": TINY_UNET, "methods": {m: TINY_UNET for m in
                                                 ("avid", "scratch", "poe", "action-cfg", "classifier-guidance")}}
    sizes["methods"]["controlnet-small"] = {**TINY_UNET, "base_channels": 4}
    (tmp_path / "tiny-sizes.yaml").write_text(yaml.safe_dump(sizes))
    torch.manual_seed(0)
    clf = ClassifierConfig(unet=TINY_UNET, frames=6, cond_frames=2, frame_size=16, num_actions=5,
                           proj_channels=4, hidden=16)
    save_classifier(tmp_path / "classifier", ActionClassifier(clf))
    return load_experiment(None, [
        "name=tiny", f"runs={tmp_path / 'runs'}", f"reports={tmp_path / 'reports'}",
        f"sizes={tmp_path / 'tiny-sizes.yaml'}", "steps=2", "eval_size=3", "sweep_size=2",
        f"data.train={data}", f"data.val={val}", f"data.eval={test}", f"metrics.classifier={tmp_path / 'classifier'}",
        f"metrics.weights_dir={tmp_path / 'no-weights'}", f"run.base={base}", "run.data.frames=6",
        "run.train.batch_size=2", "run.train.precision=32-true", "run.train.progress=false",
        "run.train.ckpt_every=1", "run.train.log_every=1", "run.sample.steps=2", "run.sample.batch_size=4", *more])


def read_csv(path):
    with open(path) as f:
        return {row["method"]: row for row in csv.DictReader(f)}


def _has(name: str) -> bool:
    try:
        return bool(packaged.locate(name))
    except FileNotFoundError:
        return False


def test_the_whole_comparison_writes_the_papers_tables_and_a_rerun_trains_and_samples_nothing(tmp_path, monkeypatch):
    exp = tiny_experiment(tmp_path)
    report = run_experiment(exp)

    # every method trained for the same number of steps; fine-tuning at the paper's lr 2e-5 (its
    # default_lr: the experiment sets no train.lr), the others at 1e-4, each recorded in its run
    assert exp.run.train.lr is None
    for m in DEFAULT_METHODS:
        cfg = yaml.safe_load((tmp_path / "runs" / "tiny" / m / "config.yaml").read_text())
        assert cfg["step"] == 2
        assert cfg["run"]["train"]["lr"] == (2e-5 if m == "finetune" else 1e-4)

    # Table 1: one row per method, the base model and the copy-last-frame baseline; Table 3: AVID and
    # its two ablations (and the same baseline)
    table1 = read_csv(report / "table1.csv")
    assert set(table1) == set(DEFAULT_METHODS) - {"avid-no-mask", "avid-no-cond"} | {"base", COPY_LAST}
    assert set(read_csv(report / "table3-ablations.csv")) == {"avid", "avid-no-mask", "avid-no-cond", COPY_LAST}
    assert table1[COPY_LAST]["trainable_params"] == ""
    md = (report / "table1.md").read_text()
    for m in set(table1) - {COPY_LAST}:
        label = re.search(rf"^\| {re.escape(m)} \((\d+k|\d+\.\dM)\)( †)? \|", md, re.M)
        assert label, f"{m}: no parameter count in brackets"
        assert bool(label.group(2)) == (m in NEEDS_PARAMETERS), m
        assert int(table1[m]["needs_parameters"]) == (m in NEEDS_PARAMETERS)
    assert {"ssim", "psnr"} <= set(next(iter(table1.values())))
    assert "**" in md  # the best of each metric (and any within 2%) in bold
    assert "normalised" in (report / "normalised.csv").read_text()

    # sweeps: one trained model per swept method, every grid value sampled, the chosen one from the grid
    sweeps = json.loads((report / "sweeps.json").read_text())
    assert set(sweeps) == set(PAPER_SWEEPS)
    for m, s in sweeps.items():
        (option, grid), = PAPER_SWEEPS[m].items()
        assert [v[option] for v in s["grid"]] == list(grid) and s["chosen"][option] in grid
        # FVD when its network is there (the set-up line brings it), else the first metric that is a number
        assert s["criterion"] in (("fvd",) if _has("i3d") else ("aer", "ssim", "psnr"))
    assert len(read_csv(report / "sweeps.csv")) == sum(len(g) for s in PAPER_SWEEPS.values() for g in s.values())

    readme = (report / "README.md").read_text()
    assert "2 optimiser steps" in readme and "DDIM with 2 steps" in readme and "3 test trajectories" in readme
    # every number says its split: sweeps chosen on the validation split, tables on the test split
    assert "validation split: 2 trajectories of synthetic data" in readme and str(tmp_path / "val") in readme
    assert (report / "sweeps.md").read_text().startswith("Sweep values chosen on the validation split: 2 trajectories")
    assert "validation split" in (report / "sweeps" / "poe" / "metrics.md").read_text()
    assert "test split: 3 trajectories" in md and "test split: 3 trajectories" in (report / "eval" / "metrics.md").read_text()
    assert "weights not found" in readme  # unavailable metrics are named, never given a number

    # rerun: finished runs are skipped and every video comes from the sample cache
    def fail(*args, **kwargs):
        raise AssertionError("a finished run was trained or a cached video sampled again")

    monkeypatch.setattr(avid.pipelines.budget, "train", fail)
    monkeypatch.setattr(avid.pipelines.evaluate, "sample_videos", fail)
    again = run_experiment(exp)
    rerun = read_csv(again / "table1.csv")
    assert rerun.keys() == table1.keys()
    for m, row in table1.items():  # equal up to float noise (LPIPS's VGG may sum in another order)
        assert rerun[m].keys() == row.keys()
        for k, v in row.items():
            assert rerun[m][k] == v or float(rerun[m][k]) == pytest.approx(float(v), rel=1e-5), (m, k)


def test_every_method_is_trained_and_sampled_once_per_seed_and_the_tables_give_mean_and_interval(tmp_path):
    exp = tiny_experiment(tmp_path, ["seeds=[0, 1]", "methods=[avid, scratch, poe]",
                                     "sweeps={poe: {lambda_p: [0.2, 0.4]}}", "metrics.classifier=null",
                                     "metrics.perceptual=false"])  # seeds, not metrics (the test above has them)
    report = run_experiment(exp)
    runs = tmp_path / "runs" / "tiny"
    for m in exp.methods:  # seed 0 keeps the single-seed folder, seed 1 its own
        for seed, folder in ((0, runs / m), (1, runs / "seed-1" / m)):
            assert yaml.safe_load((folder / "config.yaml").read_text())["run"]["train"]["seed"] == seed
        assert (runs / m / "model.safetensors").read_bytes() != (runs / "seed-1" / m / "model.safetensors").read_bytes()
    per_seed = [json.loads((report / sub / "metrics.json").read_text()) for sub in ("eval", "seed-1/eval")]
    assert per_seed[0]["base"]["psnr"] != per_seed[1]["base"]["psnr"]  # sampled with seed = the seed
    assert per_seed[0][COPY_LAST] == per_seed[1][COPY_LAST]  # the same test trajectories

    # Table 1: the mean over seeds, its 95% Student-t interval, Welch's test against AVID
    a, b = (r["avid"]["psnr"] for r in per_seed)
    assert float(read_csv(report / "table1.csv")["avid"]["psnr"]) == pytest.approx((a + b) / 2)
    seeds = {(r["method"], r["metric"]): r for r in csv.DictReader(open(report / "seeds.csv"))}
    avid_psnr = seeds[("avid", "psnr")]
    assert (float(avid_psnr["seed_0"]), float(avid_psnr["seed_1"])) == pytest.approx((a, b))
    assert float(avid_psnr["ci95_half_width"]) == pytest.approx(12.7062 * abs(a - b) / 2, rel=1e-4)  # t_{.975, 1}
    assert avid_psnr["welch_p_vs_avid"] == "" and seeds[("base", "ssim")]["welch_p_vs_avid"] != ""
    md = (report / "table1.md").read_text()
    assert re.search(r"^\| avid \(\d+k\) \| .*\d ± \d", md, re.M)
    assert "Mean ± 95% confidence interval over seeds 0, 1" in md and "Welch's t-test" in md
    assert "Sweep values chosen on the validation split: 2 trajectories" in (report / "sweeps.md").read_text()
    assert (report / "sweeps" / "poe").is_dir() and not (report / "seed-1" / "sweeps").exists()  # first seed only


def test_the_validation_and_test_splits_must_not_be_the_same_trajectories(tmp_path):
    exp = tiny_experiment(tmp_path, [f"data.val={tmp_path / 'test'}"])
    with pytest.raises(ValueError, match="validation and test splits are the same folder"):
        run_experiment(exp)


def matched_counts(preset, cfgs, diffusion, **layout) -> dict:
    """Trainable parameters of the parameter-matched methods at their experiment options, against a
    base model that is only held (its layout given by ``layout``)."""
    from avid.methods import Context
    from avid.methods.sizes import MATCHED, trainable_parameter_counts

    held = type("Held", (), {"spec": type("Spec", (), {"latent": False})()})()
    ctx = Context(diffusion=Diffusion(diffusion), base=held, **layout)
    return trainable_parameter_counts(preset, ctx, options={m: cfgs[m].method.options for m in MATCHED})


def test_the_cpu_config_gives_every_method_the_same_steps_and_matched_sizes(tmp_path):
    exp = load_experiment("configs/experiments/coinrun-cpu.yaml", ["steps=7"])
    preset = load_size_preset(exp.sizes)
    cfgs = {m: method_run_config(exp, m, preset, tmp_path) for m in exp.methods}
    assert all(c.train.max_steps == 7 and c.data.train == str(tmp_path) for c in cfgs.values())
    # finetune's own rate, below the adapters' as in the paper; every other method has the common rate
    assert cfgs["finetune"].train.lr == exp.per_method["finetune"]["train.lr"] == 2e-4 < exp.run.train.lr
    assert cfgs["avid"].train.lr == exp.run.train.lr == 5e-4
    assert cfgs["avid-no-mask"].method.options == preset.options("avid")
    # the quickstart's shift path for every method whose output can carry it (test of the sizes below)
    shift = {"residual": True, "motion": "shift", "shift_radius": [32, 8], "shift_scale": 16, "shift_target": 0.02}
    for m in ("avid", "avid-no-cond", "scratch", "poe", "action-cfg"):
        assert cfgs[m].method.options == {**preset.options(m), **shift}, m
    # ... and the parameter-matched methods stay within 10% of each other with it (the paper's rule)
    counts = matched_counts(preset, cfgs, DiffusionConfig(num_steps=200), channels=3, cond_frames=2,
                            action_kind="discrete", num_actions=15)
    assert max(counts.values()) <= 1.10 * min(counts.values()) and counts["avid"] > 3.5e6, counts
    assert cfgs["controlnet"].method.options == {} and cfgs["finetune"].method.options == {}
    assert str(cfgs["poe"].out).endswith("coinrun-cpu/poe")
    paper = load_experiment("configs/experiments/coinrun-paper.yaml")
    assert (paper.run.sample.sampler, paper.run.train.batch_size, paper.eval_size) == ("ddpm", 64, 1024)
    paper_cfgs = {m: method_run_config(paper, m, load_size_preset(paper.sizes), tmp_path) for m in ("avid", "finetune")}
    assert (paper_cfgs["avid"].train.lr, paper_cfgs["finetune"].train.lr) == (1e-4, 2e-5)  # paper Table 8
    with pytest.raises(ValueError, match="unknown"):
        load_experiment(None, ["methods=[avid, nonsense]"])
    with pytest.raises(ValueError, match="seeds must be"):
        load_experiment(None, ["seeds=[0, 0]"])
    assert exp.seeds == [0, 1, 2] and exp.data.val_preset == "coinrun-val" and load_experiment(None).seeds == [0]
    seed2 = method_run_config(exp, "avid", preset, tmp_path, seed=2)
    assert seed2.train.seed == 2 and seed2.out.endswith("coinrun-cpu/seed-2/avid")


def test_the_command_line_sets_the_budget(monkeypatch):
    from avid.cli import main

    seen = {}
    monkeypatch.setattr(experiment, "run_experiment", lambda exp, command: seen.update(exp=exp, command=command))
    main(["experiment", "coinrun", "--train-steps", "5", "--methods", "avid,scratch", "--eval-size", "8",
          "--sweep-size", "4", "--minutes-per-method", "2.5", "--seeds", "3,4", "run.sample.steps=7"])
    exp = seen["exp"]
    assert (exp.name, exp.steps, exp.methods) == ("coinrun-cpu", 5, ["avid", "scratch"])
    assert (exp.eval_size, exp.sweep_size, exp.seeds) == (8, 4, [3, 4])
    assert exp.minutes_per_method == 2.5 and exp.run.sample.steps == 7
    assert seen["command"] == ("avid experiment coinrun --train-steps 5 --methods avid,scratch --eval-size 8 "
                               "--sweep-size 4 --minutes-per-method 2.5 --seeds 3,4 run.sample.steps=7")  # as typed


def test_seeds_combine_into_mean_and_interval_and_replace_a_single_evaluations_interval():
    from avid.pipelines.evaluate import EvalResult
    from avid.pipelines.experiment_report import combine_seeds

    def result(avid_psnr, base_psnr):
        return EvalResult({"avid": {"psnr": avid_psnr, "psnr_ci": (0.0, 99.0), "sample_seconds": 2.0},
                           "base": {"psnr": base_psnr, "ssim": "n/a (why)", "sample_seconds": 1.0}}, [])

    one = result(18.0, 17.0)
    assert combine_seeds({0: one}, "avid") is one  # one seed: as evaluated
    res = combine_seeds({0: one, 1: result(18.2, 17.1), 2: result(17.8, 16.9)}, "avid")
    avid, base = res.metrics["avid"], res.metrics["base"]
    assert float(avid["psnr"]) == pytest.approx(18.0) and avid["psnr"].half > 0 and avid["psnr"].p is None
    assert "psnr_ci" not in avid  # the interval over seeds, not one seed's over trajectories
    assert base["psnr"].significant and base["ssim"] == "n/a (why)"
    assert avid["sample_seconds"] == 6.0


def test_avid_tiny_keeps_two_seeds_and_the_first_two_values_of_each_sweep(monkeypatch):
    full = load_experiment("configs/experiments/coinrun-cpu.yaml")
    monkeypatch.setenv("AVID_TINY", "1")
    tiny = load_experiment("configs/experiments/coinrun-cpu.yaml")
    assert (full.seeds, tiny.seeds) == ([0, 1, 2], [0, 1])
    assert set(tiny.sweeps) == set(full.sweeps) == set(PAPER_SWEEPS)
    for m, grid in full.sweeps.items():
        assert all(len(v) > 2 for v in grid.values())  # so the cap is seen
        assert tiny.sweeps[m] == {k: v[:2] for k, v in grid.items()}


def test_a_stopped_training_segment_still_counts_in_the_runs_budget(tmp_path, monkeypatch):
    """A run stopped by SIGTERM / Ctrl-C resumes where it stopped; the wall and CPU time it spent must
    stay in its budget record, or a resumed rung of a scaling ladder under-reports its CPU-minutes."""
    import time as _time

    from avid.pipelines import budget

    def stopped(cfg):
        (tmp_path / "run").mkdir(exist_ok=True)
        t = _time.process_time()
        while _time.process_time() - t < 0.05:  # some CPU time before the signal
            pass
        raise KeyboardInterrupt

    monkeypatch.setattr(budget, "train", stopped)
    cfg = type("Cfg", (), {"out": str(tmp_path / "run")})()
    with pytest.raises(KeyboardInterrupt):
        budget.timed_train(cfg)
    record = budget.budget_record(tmp_path / "run")
    assert record["segments"] == 1 and record["cpu_seconds"] >= 0.05 and record["train_seconds"] >= 0.05
    monkeypatch.setattr(budget, "train", lambda cfg: None)
    assert budget.timed_train(cfg)["segments"] == 2  # the next segment adds to it


def test_the_robot_config_gives_the_methods_with_an_own_prediction_the_residual_path_at_matched_sizes(tmp_path):
    """configs/experiments/robot-cpu.yaml: AVID and every method with a prediction of its own start from
    "nothing moves" (``residual``), as the robot quickstart's adapter; sizes stay within 10%."""
    exp = load_experiment("configs/experiments/robot-cpu.yaml")
    preset = load_size_preset(exp.sizes)
    cfgs = {m: method_run_config(exp, m, preset, tmp_path) for m in exp.methods}
    for m in ("avid", "avid-no-cond", "scratch", "poe", "action-cfg"):
        assert cfgs[m].method.options == {**preset.options(m), "residual": True}, m
    assert "residual" not in cfgs["avid-no-mask"].method.options  # its output is added to the base's
    assert cfgs["finetune"].train.lr == 2e-4 and cfgs["avid"].train.loss_weighting == "truncated_snr"
    counts = matched_counts(preset, cfgs, DiffusionConfig(num_steps=1000, schedule="linear", param="v"), channels=4,
                            cond_frames=1, action_kind="continuous", num_actions=7)
    assert max(counts.values()) <= 1.10 * min(counts.values()) and counts["avid"] > 2e6, counts
