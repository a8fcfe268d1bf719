"""The `avid` command end to end on tiny models: train, sample, evaluate (resumable), export, bench."""

import numpy as np
import pytest
import yaml

from avid.cli import main
from avid.config import SampleConfig, load_run_config
from avid.pipelines.evaluate import evaluate, load_eval_batch
from avid.methods import build_method
from avid.train import build_context, load_method
from tests.conftest import TINY_UNET, make_base, make_store


@pytest.fixture
def trained(tmp_path):
    base, data = make_base(tmp_path / "base"), make_store(tmp_path / "data").root
    cfg = {"name": "t", "out": str(tmp_path / "run"), "base": str(base),
           "data": {"train": str(data), "frames": 6},
           "method": {"name": "avid", "options": {"unet": TINY_UNET}},
           "train": {"max_steps": 2, "batch_size": 4, "progress": False, "precision": "32-true"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    main(["train", "--config", str(tmp_path / "c.yaml"), "--set", "train.ckpt_every=1"])
    return tmp_path, base, data


def test_train_sample_and_export(trained, capsys):
    tmp, base, data = trained
    main(["sample", "--checkpoint", str(tmp / "run"), "--data", str(data), "--limit", "3", "--ddim-steps", "4",
          "--out", str(tmp / "s")])
    videos = np.load(tmp / "s" / "videos.npy")
    assert videos.shape == (3, 4, 16, 16, 3) and videos.dtype == np.uint8
    assert np.load(tmp / "s" / "mask_per_step.npy").shape == (4, 2) and (tmp / "s" / "samples.gif").exists()
    main(["export", "--run", str(base), "--out", str(tmp / "shipped"), "--dtype", "bf16"])
    assert (tmp / "shipped" / "model.safetensors").stat().st_size < (base / "model.safetensors").stat().st_size


def test_bad_input_gives_a_clear_error_and_exit_code(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(tmp_path / "missing.yaml")])
    assert e.value.code == 2 and "not found" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("train: {max_stepz: 3}\n")
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "bad.yaml")])
    assert "unknown key(s) ['max_stepz']" in capsys.readouterr().err


def test_evaluation_writes_the_report_and_resumes_from_cached_samples(trained, monkeypatch):
    tmp, base, data = trained
    method, mc = load_method(tmp / "run", precision="fp32")
    cfg = load_run_config(None, [f"base={base}", f"data.train={data}", "data.frames=6"])
    base_method = build_method("base", build_context(cfg, {"action_kind": "discrete", "num_actions": 5,
                                                            "frame_size": 16}, "fp32"))
    batch = load_eval_batch(data, 6, 2, limit=4)
    sc = SampleConfig(steps=3, batch_size=2, precision="fp32")
    res = evaluate({"base": base_method, "avid": method}, batch, sc, tmp / "report")
    for f in ("metrics.md", "metrics.csv", "metrics.json", "samples.gif", "samples.mp4", "videos/avid.gif",
              "masks/avid.gif", "mask_per_step.png", "samples/avid.npz"):
        assert (tmp / "report" / f).exists(), f
    assert set(res.metrics["avid"]) >= {"psnr", "ssim"} and res.rows[1].params > 0
    # the table closes with the trivial baseline: the last conditioning frame repeated, scored alike
    from avid.pipelines.evaluate import COPY_LAST, to01
    from avid.metrics import frame_metrics

    assert res.rows[-1].method == COPY_LAST and res.rows[-1].params is None
    copy = frame_metrics(to01(batch.x0), to01(batch.first[:, :, -1:].expand_as(batch.x0)))
    assert res.rows[-1].values["psnr"] == pytest.approx(copy["psnr"])
    assert f"| {COPY_LAST} |" in (tmp / "report" / "metrics.md").read_text()
    assert "Precision of every forward pass: fp32 (requested)" in (tmp / "report" / "metrics.md").read_text()
    # ... and the report says where the baseline's PSNR comes from (still frames scored at the cap)
    assert "Still frames (the ground truth equals the last conditioning frame)" in (tmp / "report" / "metrics.md").read_text()
    assert 0 <= res.metrics["avid"]["beats_copy_last"] <= 1 and "still_frames" in res.metrics[COPY_LAST]
    import avid.pipelines.evaluate as ev

    monkeypatch.setattr(ev, "sample_videos", lambda *a, **k: (_ for _ in ()).throw(AssertionError("resampled")))
    again = evaluate({"base": base_method, "avid": method}, batch, sc, tmp / "report")
    assert again.metrics["avid"]["psnr"] == pytest.approx(res.metrics["avid"]["psnr"], abs=1e-4)


def test_avid_eval_command(trained, capsys):
    tmp, base, data = trained
    main(["eval", "--runs", str(tmp / "run"), "--data", str(data), "--limit", "2", "--ddim-steps", "2",
          "--with-base", "--out", str(tmp / "rep")])
    out = capsys.readouterr().out
    assert "| base |" in out and "| run (" in out and (tmp / "rep" / "metrics.csv").exists()
    # the shipped Coinrun classifier reads 10 frames of 64 px: on these videos the ratio says why it is absent
    assert "n/a: the classifier at assets/action-classifier-coinrun reads 2+8 frames of 64px" in out


def test_held_out_loss_weights_every_window_once_and_leaves_the_global_rng_alone(trained, capsys):
    import torch

    from avid.data import WindowDataset
    from avid.pipelines.evaluate import held_out_loss
    from avid.methods.base import Method

    tmp, base, data = trained

    class MeanPixel(Method):  # a "loss" with a known value per window: its mean ground-truth pixel
        uses_base = False
        asked = []

        def loss(self, batch, i=None, auxiliary=True):
            self.asked.append(auxiliary)  # a held-out loss leaves training-only terms out
            return batch.x0.flatten(1).mean(1).mean(), {}

    method, _ = load_method(tmp / "run", precision="fp32")
    probe = MeanPixel(method.ctx)
    ds = WindowDataset(data, 6, 2)
    idx = np.random.default_rng(3).choice(len(ds), size=5, replace=False)
    want = np.mean([float(ds[int(j)]["x0"].mean()) for j in idx])
    got, n = held_out_loss(probe, data, 6, 2, limit=5, batch_size=2, seed=3)  # batches of 2, 2 and 1
    assert n == 5 and got == pytest.approx(want, rel=1e-5)
    assert probe.asked == [False, False, False]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first, _ = held_out_loss(method, data, 6, 2, limit=6, batch_size=4)
    assert torch.rand(1) == before  # the global generator is restored
    assert first == held_out_loss(method, data, 6, 2, limit=6, batch_size=4)[0] > 0  # fixed steps and noise
    main(["loss", "--checkpoint", str(tmp / "run"), "--data", str(data), "--limit", "6"])
    assert "over 6 windows" in capsys.readouterr().out


def test_shuffled_actions_give_each_window_another_windows_actions(trained, capsys):
    """A probe whose loss reads only the actions: shuffling gives each window the next drawn window's
    actions (frames kept), so the mean over all windows is the same but every window's term changes."""
    import torch

    from avid.data import WindowDataset
    from avid.methods.base import Method
    from avid.pipelines.evaluate import held_out_loss

    tmp, base, data = trained
    seen = []

    class ActionProbe(Method):
        uses_base = False

        def loss(self, batch, i=None, auxiliary=True):
            seen.append((batch.x0.flatten(1).mean(1), batch.actions.float().mean(1)))
            return batch.actions.float().mean(), {}

    method, _ = load_method(tmp / "run", precision="fp32")
    probe = ActionProbe(method.ctx)
    ds = WindowDataset(data, 6, 2)
    idx = np.random.default_rng(0).choice(len(ds), size=5, replace=False)
    own = [float(ds[int(j)]["actions"].float().mean()) for j in idx]
    held_out_loss(probe, data, 6, 2, limit=5, batch_size=2, shuffled_actions=True)
    frames = torch.cat([f for f, _ in seen]).tolist()
    got = torch.cat([a for _, a in seen]).tolist()
    assert frames == pytest.approx([float(ds[int(j)]["x0"].mean()) for j in idx], rel=1e-5)  # frames are kept
    assert got == pytest.approx(own[1:] + own[:1])  # window k gets window k+1's actions, the last the first's
    with pytest.raises(ValueError, match="at least 2 windows"):
        held_out_loss(probe, data, 6, 2, limit=1, shuffled_actions=True)
    main(["loss", "--checkpoint", str(tmp / "run"), "--data", str(data), "--limit", "4", "--shuffled-actions"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "with shuffled actions" in out[1] and out[2].startswith("copy last frame")


def test_loss_at_a_fixed_level_follows_the_snr_weight(trained, capsys):
    """At the noisiest step the SNR weight (eps-MSE in x0 terms) nearly vanishes; at step 0 it is large."""
    tmp, base, data = trained
    main(["loss", "--checkpoint", str(base), "--data", str(data), "--limit", "4", "--levels", "0,19"])
    lines = [line for line in capsys.readouterr().out.strip().splitlines() if not line.startswith("copy last")]
    low, high = (float(line.split("denoising loss ")[1].split()[0]) for line in lines)
    assert "diffusion step 0" in lines[0] and "diffusion step 19" in lines[1] and high < low
    with pytest.raises(SystemExit):
        main(["loss", "--checkpoint", str(base), "--data", str(data), "--levels", "20"])
    capsys.readouterr()
    main(["loss", "--checkpoint", str(base), "--data", str(data), "--limit", "4", "--levels", "19",
          "--weighting", "x0"])  # the x0-MSE of a barely trained model at pure noise: of order one
    out = capsys.readouterr().out
    assert "(x0 weighting" in out and float(out.split("denoising loss ")[1].split()[0]) > 20 * high


def test_avid_loss_sets_copy_last_frame_beside_the_model_on_the_same_windows(trained, capsys):
    """With the x0 weighting, copy-last's loss is the mean squared error of repeating the last
    conditioning frame on the windows the model was scored on, whatever the diffusion step."""
    from avid.data import WindowDataset

    tmp, base, data = trained
    main(["loss", "--checkpoint", str(base), "--data", str(data), "--limit", "5", "--levels", "0,19",
          "--weighting", "x0"])
    lines = capsys.readouterr().out.strip().splitlines()
    copy = [float(line.split("denoising loss ")[1].split()[0]) for line in lines if line.startswith("copy last frame")]
    ds = WindowDataset(data, 6, 2)
    idx = np.random.default_rng(0).choice(len(ds), size=5, replace=False)  # avid loss's default seed 0
    want = np.mean([float((ds[int(j)]["first"][:, -1:] - ds[int(j)]["x0"]).pow(2).mean()) for j in idx])
    assert len(lines) == 4 and copy == pytest.approx([want, want], rel=1e-3)


def _parsers(parser, path=("avid",)):
    """Every (command path, parser) of the ``avid`` command tree."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_option_of_every_command_has_help_and_a_stated_default(capsys):
    import argparse

    from avid.cli import build_parser

    commands = dict(_parsers(build_parser()))
    assert {("avid", "sample"), ("avid", "eval"), ("avid", "bench"), ("avid", "quickstart"),
            ("avid", "classifier", "train"), ("avid", "experiment", "coinrun")} <= set(commands)
    for path, parser in commands.items():
        helps = parser._get_formatter()._get_help_string  # the help text as --help prints it, before wrapping
        for a in parser._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)) or \
                    a.help == argparse.SUPPRESS:  # an old spelling that only names the new one
                continue
            where = f"{' '.join(path)} {'/'.join(a.option_strings) or a.dest}"
            assert a.help, f"{where} has no help text"
            flag = isinstance(a, argparse._StoreTrueAction)
            if a.option_strings and not a.required and not flag:  # a value or, for None, in words
                assert "(default: " in helps(a), f"{where} does not state its default"


def test_sample_and_eval_default_to_the_readmes_ddim_steps():
    from avid.cli import build_parser
    from avid.config import load_run_config

    p = build_parser()
    quickstart = load_run_config("configs/coinrun/quickstart.yaml").sample
    for cmd in (["sample", "--checkpoint", "x"], ["eval", "--runs", "x", "--data", "d", "--out", "o"]):
        args = p.parse_args(cmd)
        assert (args.sampler, args.ddim_steps) == (quickstart.sampler, quickstart.steps) == ("ddim", 4)


def test_steps_is_either_ddim_steps_or_train_steps_and_the_old_spelling_names_the_new_one(capsys):
    for cmd, new in ((["sample", "--checkpoint", "x", "--steps", "4"], "--ddim-steps (DDIM sampling steps)"),
                     (["eval", "--runs", "x", "--data", "d", "--out", "o", "--steps", "4"], "--ddim-steps"),
                     (["quickstart", "--steps", "5"], "--train-steps (optimiser steps)"),
                     (["classifier", "train", "--steps", "5"], "--train-steps"),
                     (["experiment", "coinrun", "--steps", "5"], "--train-steps"),
                     (["experiment", "robot", "--steps", "5"], "--train-steps"),
                     (["codec", "train", "--steps", "5"], "--train-steps")):
        with pytest.raises(SystemExit) as e:
            main(cmd)
        assert e.value.code == 2 and f"it is now {new}" in capsys.readouterr().err


def test_version_and_a_level_range_without_a_colon_fail_or_answer_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("avid 0.")
    for bad in ("5", "7:3", "a:b"):
        with pytest.raises(SystemExit) as e:
            main(["data", "procgen", "--levels", bad, "--out", str(tmp_path / "d")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "START:STOP" in err and repr(bad) in err
    assert not (tmp_path / "d").exists()  # nothing generated
