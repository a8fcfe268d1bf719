"""Training runs (Lightning): export, resume at the saved step with the saved optimiser state,
clear errors for bad input, and sampling from a trained run."""

import copy

import pytest
import torch
import yaml

from avid.config import load_run_config
from avid.rollout import rollout_long, sample_videos
from avid.config import SampleConfig
from avid.train import NonFiniteLoss, load_method, train
from tests.conftest import TINY_UNET, make_base, make_store


def run_config(tmp_path, base, data, steps=4, method="avid", **train_kw):
    return load_run_config(None, [
        f"out={tmp_path / 'run'}", f"base={base}", f"data.train={data}", "data.frames=6",
        f"method.name={method}", f"method.options={{unet: {TINY_UNET}}}",
        f"train.max_steps={steps}", "train.batch_size=4", "train.ckpt_every=2", "train.log_every=1",
        "train.progress=false", "train.precision=32-true",
        *[f"train.{k}={v}" for k, v in train_kw.items()]])


@pytest.fixture
def setup(tmp_path):
    return make_base(tmp_path / "base"), make_store(tmp_path / "data").root


def test_run_exports_weights_and_config_and_reloads(tmp_path, setup):
    base, data = setup
    out = train(run_config(tmp_path, base, data))
    assert (out / "model.safetensors").exists() and (out / "checkpoints" / "last.ckpt").exists()
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["kind"] == "avid-method" and cfg["method"] == "avid" and cfg["step"] == 4
    assert cfg["run"]["train"]["max_steps"] == 4 and cfg["base_fingerprint"]
    method, _ = load_method(out, precision="fp32")
    assert method.name == "avid" and not method.training


def test_training_data_is_released_when_train_returns(tmp_path, setup, monkeypatch):
    """Lightning's trainer, callbacks and module form reference cycles that hold the training data;
    the quickstart samples and scores right after training, so ``train`` must not leave them to a
    later garbage collection (1.2 GB of frames for the quickstart)."""
    import gc
    import weakref

    import avid.train.run as run_module
    made = []

    class Tracked(run_module.WindowDataset):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(weakref.ref(self))

    monkeypatch.setattr(run_module, "WindowDataset", Tracked)
    base, data = setup
    gc.disable()  # only what train itself releases counts
    try:
        train(run_config(tmp_path, base, data, steps=2))
        assert made and all(ref() is None for ref in made)
    finally:
        gc.enable()


def test_resume_continues_from_the_saved_step_with_the_same_optimiser_state(tmp_path, setup):
    base, data = setup
    train(run_config(tmp_path, base, data, steps=4))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    saved_opt = ckpt["optimizer_states"][0]["state"]
    calls = {}
    import lightning.pytorch as pl

    class Spy(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            calls["start_step"] = trainer.global_step
            calls["opt"] = copy.deepcopy(trainer.optimizers[0].state_dict()["state"])

    from avid.train import harness as run_mod

    orig = run_mod.L.Trainer

    def trainer_with_spy(*a, **kw):
        kw["callbacks"] = [*kw["callbacks"], Spy()]
        return orig(*a, **kw)

    run_mod.L.Trainer = trainer_with_spy
    try:
        train(run_config(tmp_path, base, data, steps=6))
    finally:
        run_mod.L.Trainer = orig
    assert calls["start_step"] == 4
    for k, st in saved_opt.items():
        assert int(calls["opt"][k]["step"]) == int(st["step"]) == 4
        assert torch.equal(calls["opt"][k]["exp_avg"], st["exp_avg"])
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["step"] == 6


def test_resuming_into_a_folder_of_another_method_fails(tmp_path, setup):
    base, data = setup
    train(run_config(tmp_path, base, data, steps=2))
    with pytest.raises(ValueError, match="another method"):
        train(run_config(tmp_path, base, data, steps=2, method="avid-no-mask"))


def test_nan_loss_stops_with_a_clear_error(tmp_path, setup):
    base, data = setup
    with pytest.raises(NonFiniteLoss, match="non-finite training loss"):
        train(run_config(tmp_path, base, data, steps=3, lr=1e30))


def test_wrong_frame_size_and_action_space_fail_clearly(tmp_path, setup):
    base, _ = setup
    big = make_store(tmp_path / "big", size=32).root
    with pytest.raises(ValueError, match="32px, the base model expects 16px"):
        train(run_config(tmp_path, base, big))


def test_checkpoint_of_another_model_fails(tmp_path, setup):
    base, data = setup
    out = train(run_config(tmp_path, base, data, steps=2))
    other = make_base(tmp_path / "other", seed=1)
    text = (out / "config.yaml").read_text().replace(str(base), str(other))
    (out / "config.yaml").write_text(text)
    with pytest.raises(ValueError, match="another base model"):
        load_method(out)
    (out / "model.safetensors").write_bytes(b"garbage")
    (out / "config.yaml").write_text(text.replace(str(other), str(base)))
    with pytest.raises(ValueError, match="corrupt weights"):
        load_method(out)


def test_sampling_records_the_mask_at_every_diffusion_step(tmp_path, setup):
    base, data = setup
    method, _ = load_method(train(run_config(tmp_path, base, data, steps=2)), precision="fp32")
    first, actions = torch.rand(3, 3, 2, 16, 16) * 2 - 1, torch.randint(0, 5, (3, 4))
    ddpm = sample_videos(method, first, actions, SampleConfig(sampler="ddpm", batch_size=2), progress=False)
    assert ddpm.videos.shape == (3, 3, 4, 16, 16) and ddpm.mask.shape == (3, 1, 4, 16, 16)
    assert ddpm.mask_per_step.shape == (20, 2) and ddpm.mask_per_step[0, 0] == 19
    ddim = sample_videos(method, first, actions, SampleConfig(sampler="ddim", steps=5), progress=False)
    assert ddim.mask_per_step.shape == (5, 2) and torch.all((ddim.mask >= 0) & (ddim.mask <= 1))
    again = sample_videos(method, first, actions, SampleConfig(sampler="ddim", steps=5), progress=False)
    assert torch.equal(ddim.videos, again.videos)  # seeded
    long = rollout_long(method, first, torch.randint(0, 5, (3, 10)), SampleConfig(steps=3), chunk=4)
    assert long.shape == (3, 3, 10, 16, 16)


def test_a_run_may_choose_its_loss_weighting_without_changing_the_black_box(tmp_path, tiny_base, tiny_store):
    from avid.train import build_context

    cfg = run_config(tmp_path, tiny_base, tiny_store.root, loss_weighting="truncated_snr")
    ctx = build_context(cfg, tiny_store.meta, "fp32")
    assert ctx.diffusion.cfg.weighting == "truncated_snr" and ctx.base.spec.diffusion.weighting == "eps"
    i = torch.tensor([19])  # the noisiest step: the SNR weight would vanish, truncated SNR floors it at 1
    assert float(ctx.diffusion.loss_weight(i)) == pytest.approx(1.0)
    assert build_context(run_config(tmp_path, tiny_base, tiny_store.root), tiny_store.meta, "fp32").diffusion.cfg.weighting == "eps"


def test_a_residual_base_model_starts_as_copy_last_frame_behind_the_black_box(tmp_path, tiny_store):
    """`residual: true` (the shipped base's output path): an untrained model predicts "nothing
    moves" at every diffusion step, exported and served through the door, so sampling from it
    gives back the last conditioning frame."""
    cfg = load_run_config(None, [
        f"out={tmp_path / 'base'}", "base=null", f"data.train={tiny_store.root}", "data.frames=6",
        "method.name=pretrain", f"method.options={{unet: {TINY_UNET}, residual: true}}",
        "diffusion={num_steps: 20, schedule: sigmoid, param: x0}", "train.lr=0",
        "train.max_steps=1", "train.batch_size=4", "train.progress=false", "train.precision=fp32"])
    out = train(cfg)
    assert yaml.safe_load((out / "config.yaml").read_text())["residual"] is True
    from avid.blackbox import open_denoiser

    den = open_denoiser(out, precision="fp32")
    g = torch.Generator().manual_seed(0)
    first = torch.rand(2, 3, 2, 16, 16, generator=g) * 2 - 1
    x_i = torch.randn(2, 3, 4, 16, 16, generator=g)
    still = first[:, :, -1:].expand_as(x_i)
    for i in (0, 10, 19):
        assert torch.allclose(den(x_i, torch.full((2,), i), first), still, atol=1e-6)
    base, _ = load_method(out, precision="fp32")
    videos = sample_videos(base, first, torch.zeros(2, 4, dtype=torch.long),
                           SampleConfig(steps=5, batch_size=2), progress=False).videos
    assert torch.allclose(videos, still, atol=1e-5)


def test_a_base_model_with_a_shift_path_and_a_gate_answers_through_the_door_as_it_trained(tmp_path, tiny_store):
    """`motion: shift` and `gate` (configs/procgen/base-shift-cpu.yaml): the exported config records the
    output path, and the black box, the trained method and a white-box copy of the base network
    (fine-tuning, ControlNet) all turn the network's output into the same prediction."""
    cfg = load_run_config(None, [
        f"out={tmp_path / 'base'}", "base=null", f"data.train={tiny_store.root}", "data.frames=6",
        "method.name=pretrain", f"method.options={{unet: {TINY_UNET}, residual: true, motion: shift, "
        "shift_radius: [3, 2], shift_scale: 8, shift_target: 0.1, gate: true}",
        "diffusion={num_steps: 20, schedule: sigmoid, param: x0}", "train.lr=1e-2",
        "train.max_steps=3", "train.batch_size=4", "train.progress=false", "train.precision=fp32"])
    out = train(cfg)
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["residual_output"] == {"shift": {"radius": [3, 2], "scale": 8.0, "prior": 5.0, "hard": None,
                                                     "stay": 0.0},
                                           "gate": True, "snap": 0.0, "change": "param"}
    from avid.blackbox import open_denoiser
    from avid.methods import build_method
    from avid.train import build_context

    from avid.checkpoint import load_weights

    den = open_denoiser(out, precision="fp32")
    method = build_method("pretrain", build_context(cfg, tiny_store.meta, "fp32"), cfg.method.options)
    load_weights(out, method)  # the trained network, in this process
    method.eval()
    g = torch.Generator().manual_seed(0)
    first = torch.rand(2, 3, 2, 16, 16, generator=g) * 2 - 1
    x_i, i = torch.randn(2, 3, 4, 16, 16, generator=g), torch.tensor([3, 17])
    with torch.no_grad():
        trained, extras = method.predict(x_i, i, first, None)
    assert extras["shift_logits"].shape == (2, 4, 7 + 5)
    served = den(x_i, i, first)
    assert torch.allclose(served, trained, atol=1e-5)
    assert (served - first[:, :, -1:]).abs().mean() > 1e-3  # trained: not the plain "nothing moves"
    fcfg = load_run_config(None, [f"out={tmp_path / 'ft'}", f"base={out}", f"data.train={tiny_store.root}",
                                  "data.frames=6", "method.name=finetune", "train.precision=fp32"])
    finetune = build_method("finetune", build_context(fcfg, tiny_store.meta, "fp32"))
    with torch.no_grad():  # its action embedding starts at zero: the copy starts as the base exactly
        copied, _ = finetune.predict(x_i, i, first, torch.zeros(2, 4, dtype=torch.long))
    assert torch.allclose(copied, served, atol=1e-5)
    # an inference-only setting edited into the folder (shift_stay): the same weights and fingerprint but
    # other answers, so the black box publishes its settings and samples cached under others are not reused
    import shutil

    from avid.pipelines.evaluate import _cache_key, load_eval_batch

    stayed = shutil.copytree(out, tmp_path / "stayed")
    edited = yaml.safe_load((stayed / "config.yaml").read_text())
    edited["residual_output"]["shift"]["stay"] = 50.0
    (stayed / "config.yaml").write_text(yaml.safe_dump(edited))
    den_stayed = open_denoiser(stayed, precision="fp32")
    assert den_stayed.spec.fingerprint == den.spec.fingerprint
    assert den_stayed.spec.settings["shift"]["stay"] == 50.0 and den.spec.settings["shift"]["stay"] == 0.0
    assert not torch.allclose(den_stayed(x_i, i, first), served, atol=1e-4)  # the blend of shifts is gone
    batch, sc = load_eval_batch(tiny_store.root, 6, 2, limit=2), SampleConfig(steps=2)
    keys = [_cache_key(load_method(folder, "fp32")[0], batch, sc) for folder in (out, out, stayed)]
    assert keys[0] == keys[1] != keys[2]


def test_the_learning_rate_warms_up_then_follows_a_cosine_to_its_floor():
    from avid.train.module import lr_factor

    f = [lr_factor(s, "cosine", 10, 110, 0.1) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warm-up over 10 steps
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.55) and f[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # decays monotonically after the warm-up
    assert lr_factor(500, "constant", 10, 110, 0.1) == 1.0


def test_a_run_records_the_precision_it_used(tmp_path, setup):
    base, data = setup
    out = train(run_config(tmp_path, base, data, steps=1, precision="auto", lr_schedule="cosine", warmup_steps=1))
    used = yaml.safe_load((out / "config.yaml").read_text())["precision_used"]
    from avid.precision import resolve_precision

    assert used == resolve_precision("auto").describe()
    assert yaml.safe_load((out / "run.yaml").read_text())["train"]["precision"] == "auto"  # as asked, loadable


def test_the_ema_warms_up_so_a_short_run_is_not_held_back_by_its_initial_weights():
    from avid.train.callbacks import WarmupEMA

    avg = WarmupEMA(0.995)._kwargs["avg_fn"]
    ema = torch.zeros(1)
    for n in range(300):  # the weights jump from 0 to 1 at the first step and stay there
        ema = avg(ema, torch.ones(1), torch.tensor(n))
    assert float(ema) > 0.95  # a fixed decay of 0.995 would still be 22% initial weights (0.78)
    late = avg(torch.zeros(1), torch.ones(1), torch.tensor(10**6))
    assert float(late) == pytest.approx(0.005)  # long runs: the configured decay


def test_the_quickstart_plans_its_steps_from_measured_times(tmp_path, setup, monkeypatch):
    import avid.pipelines.quickstart as qs

    base, data = setup
    cfg = run_config(tmp_path, base, data, steps=50)
    cfg.sample.steps = 25  # DDIM
    opt = qs.QuickstartOptions(eval_size=4, min_steps=5)
    measured = iter([])
    monkeypatch.setattr(qs, "_seconds", lambda fn, repeats=2: (fn(), next(measured))[1])  # runs each step once
    measured = iter([1.0, 0.5] * 3)  # train step 1 s, sampling step 0.5 s
    roomy = qs.plan_steps(cfg, data, opt, seconds_left=10**6)
    assert roomy.steps == 50 and not roomy.too_slow
    assert roomy.eval_seconds == pytest.approx(1 * 25 * 0.5 * 1.1 + 20)  # one batch of 4, 25 DDIM steps
    tight = qs.plan_steps(cfg, data, opt, seconds_left=0)
    assert tight.too_slow and tight.steps == 5  # said plainly, and the minimum is trained anyway
    mid = qs.plan_steps(cfg, data, opt, seconds_left=roomy.eval_seconds + 21)
    assert mid.steps == 20  # the budget after the evaluation over the measured step (+5% overhead)


def test_train_compile_compiles_the_method_networks_in_place(tmp_path, setup, monkeypatch):
    from avid.train import run as run_mod

    calls = []

    def eager_compile(module, compile=False, channels_last=False):  # inductor's compile time is for `avid bench`
        calls.append((compile, channels_last))
        return run_mod.tune_networks.__wrapped__(module, compile, channels_last, backend="eager")

    eager_compile.__wrapped__ = run_mod.tune_networks
    monkeypatch.setattr(run_mod, "tune_networks", eager_compile)
    base, data = setup
    out = train(run_config(tmp_path, base, data, steps=2, compile=True, channels_last=True))
    assert calls == [(True, False)]  # channels-last only on CUDA
    method, _ = load_method(out)
    assert yaml.safe_load((out / "config.yaml").read_text())["step"] == 2
