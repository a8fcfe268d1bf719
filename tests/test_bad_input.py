"""Every bad input is one clear line (`avid: error: ...`, exit code 2), never a traceback or a
silent success; --debug shows the traceback."""

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from avid.blackbox import open_denoiser
from avid.cli import main
from avid.config import SampleConfig, load_run_config
from avid.pipelines.evaluate import _cache_key, load_eval_batch
from avid.methods import build_method
from avid.rollout import sample_videos
from avid.train import build_context, train
from tests.conftest import TINY_UNET, make_base, make_store
from tests.test_train import run_config


@pytest.fixture
def setup(tmp_path):
    return make_base(tmp_path / "base"), make_store(tmp_path / "data").root


def fails(argv, capsys, match):
    """``avid argv`` exits with code 2, and stderr ends with one error line that contains ``match``."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    lines = err.strip().splitlines()  # progress lines (e.g. "precision: ...") may come before it
    assert lines[-1].startswith("avid: error: ") and sum("avid: error" in x for x in lines) == 1, err
    assert "Traceback" not in err and match in lines[-1], err
    return lines[-1]


def config_file(tmp_path, base, data, **changes):
    d = {"out": str(tmp_path / "run"), "base": base and str(base), "data": {"train": str(data), "frames": 6},
         "method": {"name": "avid", "options": {"unet": TINY_UNET}},
         "train": {"max_steps": 1, "batch_size": 4, "progress": False, "precision": "fp32"}}
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            d.setdefault(section, {})[name] = value
        else:
            d[section] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(d))
    return str(path)


def test_nan_weights_in_a_base_model_are_an_error_when_it_is_opened(tmp_path, setup, capsys):
    base, data = setup
    state = load_file(base / "model.safetensors")
    state[next(iter(state))][..., 0] = float("nan")
    save_file(state, base / "model.safetensors")
    with pytest.raises(ValueError, match="non-finite weights"):
        open_denoiser(base)
    fails(["sample", "--checkpoint", str(base), "--data", str(data), "--out", str(tmp_path / "s")], capsys,
          "holds non-finite weights (NaN or inf) in 1 of")


def test_bad_sampling_inputs_are_refused(tmp_path, setup, capsys):
    base, data = setup
    s = ["sample", "--checkpoint", str(base), "--out", str(tmp_path / "s")]
    fails([*s, "--data", str(data), "--eta", "nan"], capsys, "sampling.eta must be a finite number >= 0, got nan")
    fails([*s, "--data", str(data), "--ddim-steps", "0"], capsys, "--ddim-steps must be at least 1, got 0")
    fails([*s, "--data", str(data), "--limit", "0"], capsys, "--limit must be at least 1")
    np.save(tmp_path / "a.npy", np.zeros((2, 4), np.int64))
    np.save(tmp_path / "f.npy", np.random.default_rng(0).random((2, 2, 16, 16, 3)).astype(np.float32))
    fails([*s, "--first-frames", str(tmp_path / "f.npy"), "--actions", str(tmp_path / "a.npy")], capsys,
          "--first-frames must be uint8 (0..255), got float32 in [")
    np.save(tmp_path / "f.npy", np.zeros((2, 2, 32, 32, 3), np.uint8))
    fails([*s, "--first-frames", str(tmp_path / "f.npy"), "--actions", str(tmp_path / "a.npy")], capsys,
          "takes 2 first frames of 3 channels, 16x16 px; got 2 frames of 3 channels, 32x32 px")


def test_first_frames_of_the_wrong_size_reach_no_method_without_a_base(tmp_path, tiny_store):
    cfg = load_run_config(None, ["base=null", f"data.train={tiny_store.root}", "data.frames=6",
                                 "diffusion={num_steps: 20}"])
    scratch = build_method("scratch", build_context(cfg, tiny_store.meta), {"unet": TINY_UNET})
    with pytest.raises(ValueError, match="16x16 px; got 2 frames of 3 channels, 32x32 px"):
        sample_videos(scratch, torch.zeros(1, 3, 2, 32, 32), torch.zeros(1, 4, dtype=torch.long), progress=False)


def test_sample_checks_its_output_folder_before_sampling(tmp_path, setup, capsys, monkeypatch):
    import avid.rollout

    base, data = setup
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setattr(avid.rollout, "sample_videos", lambda *a, **k: pytest.fail("sampled before checking --out"))
    fails(["sample", "--checkpoint", str(base), "--data", str(data), "--out", str(tmp_path / "file" / "out")],
          capsys, f"cannot write to {tmp_path / 'file' / 'out'}")


def test_no_false_success_for_empty_or_endless_training(tmp_path, setup, capsys):
    base, data = setup
    for steps in (0, -1):
        with pytest.raises(ValueError, match=f"train.max_steps must be a finite number >= 1, got {steps}"):
            run_config(tmp_path, base, data, steps=steps)
    cfg = run_config(tmp_path, base, data, batch_size=8)
    cfg.data.train_limit = 5
    with pytest.raises(ValueError, match=r"batch size \(8\) is larger than the 5 training windows"):
        train(cfg)
    assert not (tmp_path / "run" / "model.safetensors").exists()
    fails(["loss", "--checkpoint", str(base), "--data", str(data), "--limit", "0"], capsys, "--limit must be at least 1, got 0")
    fails(["eval", "--runs", str(base), "--data", str(data), "--limit", "0", "--out", str(tmp_path / "r")], capsys,
          "must be at least 1")


def test_typos_in_options_name_the_valid_ones(tmp_path, setup, capsys):
    base, data = setup
    fails(["train", "--config", config_file(tmp_path, base, data, method__options={"unet": TINY_UNET, "maks": 1})],
          capsys, "unknown key(s) ['maks'] in method.options of method 'avid'; valid: ['condition_on_base', 'mask',")
    fails(["train", "--config", config_file(tmp_path, base, data,
                                            method__options={"unet": {**TINY_UNET, "base_chanels": 8}})],
          capsys, "unknown key(s) ['base_chanels'] in the method's `unet` options; valid: [")
    fails(["train", "--config", config_file(tmp_path, None, data, diffusion={"num_step": 20},
                                            method__name="scratch")],
          capsys, "unknown key(s) ['num_step'] in config section 'diffusion'; valid: [")


def test_broken_files_and_library_errors_are_one_line(tmp_path, setup, capsys, monkeypatch):
    base, data = setup
    (tmp_path / "bad.yaml").write_text("train: {max_steps: [1\n")
    fails(["train", "--config", str(tmp_path / "bad.yaml")], capsys, "is not valid YAML")
    fails(["train", "--config", config_file(tmp_path, base, data), "--set", "train.lr=[1"], capsys,
          "the value is not valid YAML")
    cfg = yaml.safe_load((base / "config.yaml").read_text())
    del cfg["frame_size"]
    (base / "config.yaml").write_text(yaml.safe_dump(cfg))
    fails(["loss", "--checkpoint", str(base), "--data", str(data)], capsys, "lacks ['frame_size']")
    fails(["train", "--config", config_file(tmp_path, make_base(tmp_path / "b2"), data, train__accelerator="gpu")],
          capsys, "avid: error: Lightning: ")
    fails(["train", "--config", config_file(tmp_path, make_base(tmp_path / "b3"), data, out=str(tmp_path / "nan"),
                                            train__lr=1e30, train__max_steps=3)],
          capsys, "non-finite training loss")

    import avid.cli

    monkeypatch.setattr(avid.cli, "cmd_export", lambda args: 1 / 0)
    err = fails(["export", "--run", "x", "--out", "y"], capsys, "ZeroDivisionError: division by zero")
    assert "--debug" in err and "Traceback" not in err
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "export", "--run", "x", "--out", "y"])


def test_the_sample_cache_key_covers_every_weight_of_a_controlnet(tmp_path, setup):
    """A ControlNet's first state-dict tensors are the frozen base's: retraining changes only later
    ones, and the cached samples must not be reused then."""
    base, data = setup
    cfg = load_run_config(None, [f"base={base}", f"data.train={data}", "data.frames=6", "method.name=controlnet"])
    method = build_method("controlnet", build_context(cfg, {"num_actions": 5, "frame_size": 16}, "fp32"))
    batch, sc = load_eval_batch(data, 6, 2, limit=2), SampleConfig(steps=2)
    key = _cache_key(method, batch, sc)
    assert key == _cache_key(method, batch, sc)
    with torch.no_grad():
        list(method.parameters())[-1].add_(1e-3)  # the last trainable tensor, as a retrained one differs
    assert _cache_key(method, batch, sc) != key
    key = _cache_key(method, batch, sc)
    batch.first[:, :, 0] = 1 - batch.first[:, :, 0]  # another earlier conditioning frame: other samples
    assert _cache_key(method, batch, sc) != key


@pytest.mark.parametrize("argv, flag", [
    (["quickstart", "--train-steps", "0"], "--train-steps must be at least 1, got 0"),
    (["quickstart", "--eval-size", "0"], "--eval-size must be at least 1, got 0"),
    (["quickstart", "--budget-minutes", "0"], "--budget-minutes must be a positive number, got 0.0"),
    (["quickstart", "--budget-minutes", "-5"], "--budget-minutes must be a positive number, got -5.0"),
    (["quickstart", "--train-levels", "0"], "--train-levels must be at least 1, got 0"),
    (["quickstart", "--domain", "robot", "--train-episodes", "0"], "--train-episodes must be at least 1, got 0"),
    (["bench-metrics", "--data", "d", "--threads", "0"], "--threads must be at least 1, got 0"),
    (["sample", "--checkpoint", "c", "--first-frames", "f.npy", "--actions", "a.npy", "--limit", "0"],
     "--limit must be at least 1, got 0"),
    (["classifier", "train", "--minutes", "nan"], "--minutes must be a positive number, got nan")])
def test_a_count_of_zero_or_a_negative_budget_is_refused_before_any_work(argv, flag, capsys, monkeypatch, tmp_path):
    """Issue 11: `quickstart --train-steps 0` planned its own steps, `--budget-minutes 0` trained
    anyway, `--eval-size 0` generated data then failed in numpy; `--limit 0` with --first-frames
    sampled everything; `--threads 0` meant all cores. Nothing may be written first."""
    import avid.pipelines.bench_metrics, avid.pipelines.classifier_train, avid.pipelines.quickstart, avid.pipelines.sample

    for module, name in ((avid.pipelines.quickstart, "quickstart"), (avid.pipelines.sample, "sample_to_folder"),
                         (avid.pipelines.bench_metrics, "bench_metrics"),
                         (avid.pipelines.classifier_train, "train_classifier")):
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("ran before checking its options"))
    monkeypatch.chdir(tmp_path)
    fails(argv, capsys, flag)
    assert not any(tmp_path.iterdir())


def test_an_unknown_accelerator_and_a_negative_network_width_are_named(tmp_path, setup, capsys):
    base, data = setup
    fails(["train", "--config", config_file(tmp_path, base, data, train__accelerator="tpu")], capsys,
          "train.accelerator must be one of ('auto', 'cpu', 'gpu', 'cuda'), got 'tpu'")
    fails(["train", "--config", config_file(tmp_path, base, data), "--set", "method.options.unet.base_channels=-8"],
          capsys, "unet.base_channels must be a whole number >= 1, got -8")
    fails(["train", "--config", config_file(tmp_path, base, data), "--set", "method.options.unet.channel_mults=[]"],
          capsys, "unet.channel_mults must be a non-empty list")
