"""The latent path (paper section 9.2 at CPU scale): the project trains a small autoencoder, a base
model pretrained in its latent space ships it and serves it only as the black box's encode / decode;
methods train and sample in that latent space and give back decoded frames."""

import csv
from dataclasses import replace

import pytest
import torch

from avid.blackbox import open_denoiser
from avid.config import SampleConfig, load_run_config
from avid.data import WindowDataset, collate
from avid.data.robot import RobotSpec, generate
from avid.metrics import ssim_per_frame
from avid.nn.autoencoder import Autoencoder, AutoencoderConfig, frame_ssim
from avid.pipelines.evaluate import held_out_loss
from avid.rollout import sample_videos
from avid.train import load_method, train
from avid.train.codec import CodecRunConfig, codec_training, frames_of, reconstruction_mse, train_codec
from avid.whitebox import load_codec
from tests.conftest import K, SIZE, TINY_UNET

torch.set_num_threads(1)
pytest.importorskip("pybullet")
CODEC = dict(base_channels=8, channel_mults=[1, 2, 2], groups=4)  # 16px frames -> 4 x 4x4 latents
FRAMES = 6


@pytest.fixture(scope="module")
def latent_base(tmp_path_factory):
    """16px robot episodes, a codec trained on them (a few steps) and a latent base model pretrained
    in its space (v prediction, linear schedule)."""
    root = tmp_path_factory.mktemp("latent")
    data = str(generate(RobotSpec(["pick"], episodes=2, episode_len=12, frame_size=SIZE, seed=2), str(root / "data"),
                        progress=False).root)
    train_cfg = replace(codec_training(), max_steps=3, batch_size=2, progress=False, precision="fp32")
    codec = train_codec(CodecRunConfig(out=str(root / "codec"), data=data, eval_data=data, codec=CODEC,
                                       train=train_cfg))
    cfg = load_run_config(None, [
        f"out={root / 'base'}", "base=null", f"codec={codec}", f"data.train={data}", f"data.frames={FRAMES}",
        "method.name=pretrain", f"method.options={{unet: {TINY_UNET}}}",
        "diffusion={num_steps: 20, schedule: linear, param: v}", "train.max_steps=2", "train.batch_size=2",
        "train.progress=false", "train.precision=32-true"])
    return data, codec, train(cfg)


def test_the_codec_loss_adds_a_structural_term_when_asked():
    """``ssim_weight``: the loss is MSE + latent penalty + weight x (1 - SSIM), SSIM as the reports
    measure it; 0 leaves the MSE-only loss; a negative weight is refused."""
    torch.manual_seed(0)
    video = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    batch = collate([{"first": v[:, :1], "x0": v[:, 1:], "actions": torch.zeros(2, 1)} for v in video])
    plain = Autoencoder(AutoencoderConfig(**CODEC))
    loss0, logs0 = plain.loss(batch)
    weighted = Autoencoder(AutoencoderConfig(**CODEC, ssim_weight=0.5))
    weighted.load_state_dict(plain.state_dict())
    loss, logs = weighted.loss(batch)
    frames = video.transpose(1, 2).flatten(0, 1)
    recon = weighted.decoder(weighted.encoder(frames))
    ssim = float(ssim_per_frame((frames[:, :, None] + 1) / 2, (recon.detach().clamp(-1, 1)[:, :, None] + 1) / 2).mean())
    assert "ssim" not in logs0 and logs["mse"] == pytest.approx(logs0["mse"])
    assert logs["ssim"] == pytest.approx(ssim, abs=0.05)  # the reports clamp to [-1, 1] first
    assert float(loss.detach()) == pytest.approx(float(loss0) + 0.5 * (1 - logs["ssim"]), rel=1e-5)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in weighted.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="ssim_weight"):
        AutoencoderConfig(ssim_weight=-1)


def test_the_codec_structural_term_is_float32_under_bf16_autocast():
    """Training runs under bf16 autocast; SSIM's variances (means of squares minus squared means) must
    not be computed in bf16, which cancels them to noise on smooth frames close to their reconstruction."""
    torch.manual_seed(0)
    ramp = torch.linspace(0.2, 0.6, 32)
    frames = (ramp[None, None, :, None] + ramp[None, None, None, :]).expand(4, 3, 32, 32)
    frames = (frames + 0.02 * torch.randn(4, 3, 32, 32)).contiguous()
    recon = frames + 0.02 * torch.randn_like(frames)
    reference = float(ssim_per_frame((frames[:, :, None] + 1) / 2, (recon[:, :, None] + 1) / 2).mean())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ssim = frame_ssim(recon.bfloat16(), frames)
    assert ssim.dtype == torch.float32 and float(ssim) == pytest.approx(reference, abs=0.02)


def test_the_codec_folder_records_its_scale_and_held_out_error(latent_base):
    data, folder, _ = latent_base
    codec, cfg = load_codec(folder)
    assert cfg["kind"] == "avid-codec" and cfg["latent_size"] == SIZE // 4 and cfg["held_out_mse"] >= 0
    video = frames_of(data, 16)
    z = codec.encode(video)
    assert z.shape == (1, 4, 16, SIZE // 4, SIZE // 4)
    assert float(z.std()) == pytest.approx(1.0, rel=0.2)  # scaled to about unit variance on its frames
    assert codec.decode(z).shape == video.shape
    assert reconstruction_mse(codec, video) == pytest.approx(cfg["held_out_mse"], abs=1e-3)


def test_a_latent_base_model_serves_its_codec_only_through_encode_and_decode(latent_base):
    data, codec_folder, base = latent_base
    assert (base / "codec" / "model.safetensors").is_file()
    box = open_denoiser(base, precision="fp32")
    spec = box.spec
    assert spec.latent and (spec.channels, spec.frame_size, spec.pixel_size) == (4, SIZE // 4, SIZE)
    video = frames_of(data, 6)
    codec, _ = load_codec(codec_folder)
    assert torch.allclose(box.codec.encode(video), codec.encode(video), atol=1e-5)
    z = box.codec.encode(video)
    assert torch.allclose(box.codec.decode(z), codec.decode(z), atol=1e-5)
    out = box(torch.randn(1, 4, 4, SIZE // 4, SIZE // 4), torch.tensor([3]), z[:, :, :K])
    assert out.shape == (1, 4, 4, SIZE // 4, SIZE // 4)
    assert not hasattr(box, "parameters") and not hasattr(box.codec, "parameters")


def test_an_exported_latent_base_model_ships_its_codec_and_serves_as_the_run(tmp_path, latent_base, capsys):
    """`avid export` of a latent base model copies its codec subfolder in the same dtype; the copy
    encodes, predicts and decodes as the run does up to the bf16 rounding; re-exporting replaces it."""
    from avid.cli import main

    data, _, base = latent_base
    shipped = tmp_path / "shipped"
    main(["export", "--run", str(base), "--out", str(shipped), "--dtype", "bf16"])
    assert "with its codec in codec/" in capsys.readouterr().out
    assert load_codec(shipped / "codec")[1]["stored_dtype"] == "bf16"
    video = frames_of(data, 4)
    run, copy = open_denoiser(base, precision="fp32"), open_denoiser(shipped, precision="fp32")
    z = run.codec.encode(video)
    assert torch.allclose(copy.codec.encode(video), z, atol=0.1) and not torch.equal(copy.codec.encode(video), z)
    assert torch.allclose(copy.codec.decode(z), run.codec.decode(z), atol=0.1)
    x_i = torch.randn(1, 4, 4, SIZE // 4, SIZE // 4)
    assert torch.allclose(copy(x_i, torch.tensor([3]), z[:, :, :K]), run(x_i, torch.tensor([3]), z[:, :, :K]), atol=0.1)
    main(["export", "--run", str(base), "--out", str(shipped), "--dtype", "fp32"])  # an earlier export: replaced
    assert torch.equal(open_denoiser(shipped, precision="fp32").codec.encode(video), z)


def test_the_robot_quickstart_plans_from_an_adapter_step_in_the_codec_latent_space(tmp_path, latent_base, monkeypatch):
    """The quickstart's step plan times a training step on latents, as training sees them (pixels would
    not even fit the adapter's input), and the robot domain has its own defaults."""
    import avid.pipelines.quickstart as qs

    data, _, base = latent_base
    cfg = load_run_config(None, [
        f"out={tmp_path / 'avid'}", f"base={base}", f"data.train={data}", f"data.frames={FRAMES}",
        "method.name=avid", f"method.options={{unet: {TINY_UNET}}}", "train.max_steps=50", "train.batch_size=2",
        "train.precision=32-true", "sample.steps=2"])
    shapes, step = [], qs.train_step
    monkeypatch.setattr(qs, "train_step", lambda m, batch, prec, lr: (shapes.append(tuple(batch.x0.shape)),
                                                                      step(m, batch, prec, lr))[1])
    opt = qs.QuickstartOptions(domain="robot", eval_size=2, min_steps=1)
    assert (opt.runs_dir, opt.report_dir, opt.config) == ("runs/quickstart-robot", "reports/quickstart-robot",
                                                          "configs/robot/quickstart.yaml")
    plan = qs.plan_steps(cfg, data, opt, seconds_left=10**6)
    assert shapes == [(2, 4, FRAMES - K, SIZE // 4, SIZE // 4)] and plan.steps == 50
    with pytest.raises(ValueError, match="quickstart domain must be one of"):
        qs.QuickstartOptions(domain="mars")


def test_a_latent_run_encodes_its_frames_once_when_the_codec_encodes_frames_apart(latent_base):
    """The black box's codec encodes each frame on its own, so a latent run encodes every stored frame
    once (one call per chunk, not one per batch): its windows equal the windows encoded as they come;
    a codec that mixes frames (a video codec) is caught, and its batches are encoded as they come."""
    from avid.data import LatentWindows
    from avid.methods.base import encodes_frames_apart, to_latent
    from avid.train.run import latent_data

    data, _, base = latent_base
    box = open_denoiser(base, precision="fp32")
    windows = WindowDataset(data, FRAMES, K)
    video = frames_of(data, 4)
    assert encodes_frames_apart(box.codec, video)
    before = box.stats.calls
    latents = LatentWindows(windows, box.codec.encode, chunk=10)
    assert box.stats.calls - before == -(-len(windows.frames) // 10)
    assert len(latents) == len(windows) and latents.action_kind == "continuous"
    for j in (0, len(windows) // 2, len(windows) - 1):
        expected = to_latent(box.codec, collate([windows[j]]))
        got = latents[j]
        assert torch.allclose(got["first"], expected.first[0], atol=1e-5)
        assert torch.allclose(got["x0"], expected.x0[0], atol=1e-5)
        assert torch.equal(got["actions"], windows[j]["actions"])

    class Mixing:  # each frame's latent also sees the video's mean frame
        def encode(self, v):
            z = box.codec.encode(v)
            return z + z.mean(dim=2, keepdim=True)

    assert not encodes_frames_apart(Mixing(), video)
    cfg = load_run_config(None, ["out=unused", f"base={base}", f"data.train={data}", f"data.frames={FRAMES}",
                                 "method.name=avid"])
    ctx = type("Ctx", (), {"codec": Mixing()})()
    same, transform = latent_data(cfg, ctx, windows)
    assert same is windows and transform is not None
    ctx.codec = box.codec
    cached, transform = latent_data(cfg, ctx, windows)
    assert isinstance(cached, LatentWindows) and transform is None


@pytest.mark.parametrize("name, options", [("avid", {"unet": TINY_UNET}), ("scratch", {"unet": TINY_UNET}),
                                           ("controlnet-small", {"unet": {**TINY_UNET, "base_channels": 4}})])
def test_methods_train_and_sample_in_the_latent_space_and_return_frames(tmp_path, latent_base, name, options):
    data, _, base = latent_base
    cfg = load_run_config(None, [
        f"out={tmp_path / name}", f"base={base}", f"data.train={data}", f"data.frames={FRAMES}",
        f"method.name={name}", f"method.options={options}", "train.max_steps=2", "train.batch_size=2",
        "train.progress=false", "train.precision=32-true"])
    method, mc = load_method(train(cfg), precision="fp32")
    assert method.ctx.channels == 4 and method.ctx.frame_size == SIZE // 4 and mc["frame_size"] == SIZE
    assert not any("codec" in k for k in method.state_dict())  # the codec is the provider's, not the method's
    batch = collate([WindowDataset(data, FRAMES, K, stride=FRAMES)[j] for j in range(2)])
    box = method.ctx.base
    before = box.stats.calls
    roll = sample_videos(method, batch.first, batch.actions, SampleConfig(steps=2, batch_size=2), progress=False)
    assert roll.videos.shape == batch.x0.shape and float(roll.videos.abs().max()) <= 1  # decoded frames
    assert box.stats.calls > before
    if name == "avid":
        assert roll.mask.shape == (2, 1, FRAMES - K, SIZE, SIZE)
        loss, n = held_out_loss(method, data, FRAMES, K, limit=2, precision="fp32")  # in the latent space
        assert n == 2 and loss > 0


def test_a_served_latent_base_model_answers_encode_and_decode_as_the_local_one(latent_base):
    from tests.servers import server_process

    data, _, base = latent_base
    video = frames_of(data, 4)
    local = open_denoiser(base, precision="fp32")
    with server_process(base, "--precision", "fp32") as server:
        remote = open_denoiser(server.url)
        assert remote.spec.latent and remote.spec.pixel_size == SIZE
        assert remote.spec.fingerprint == local.spec.fingerprint
        z = remote.codec.encode(video)
        assert torch.allclose(z, local.codec.encode(video), atol=1e-5)
        assert torch.allclose(remote.codec.decode(z), local.codec.decode(z), atol=1e-5)


def test_sampling_a_latent_model_keeps_latents_outside_the_frames_range(latent_base, monkeypatch):
    """A model that predicts the true clean latents exactly gets them back, decoded: the sampler clips
    its x0 to [-1, 1] in pixel space only. The codec's latents have unit variance, so clipping them
    there (as it once did) turns every latent model's sample into a washed-out still of its first frame
    whatever the model predicts (the shipped robot base's and AVID's samples were equal to three digits)."""
    data, _, base = latent_base
    method, _ = load_method(base, precision="fp32")
    codec = method.ctx.codec
    batch = collate([WindowDataset(data, FRAMES, K, stride=FRAMES)[j] for j in range(2)])
    z = codec.encode(batch.x0)
    assert float(z.abs().max()) > 1.5  # the case the old clip broke
    oracle = lambda x_i, i, first, actions: (method.diffusion.from_x0(z, x_i, i), {})  # noqa: E731
    monkeypatch.setattr(method, "predict", oracle)
    roll = sample_videos(method, batch.first, batch.actions, SampleConfig(steps=3, batch_size=2), progress=False)
    torch.testing.assert_close(roll.videos, codec.decode(z).clamp(-1, 1), atol=1e-4, rtol=0)


def test_a_part_way_start_noises_the_last_conditioning_frame_in_the_latent_space(latent_base, monkeypatch):
    """``SampleConfig.start_step``: the first network call sees the encoded last conditioning frame,
    repeated over the clip and noised to that step (at step 0, almost itself), and only the steps from
    there down are walked."""
    data, _, base = latent_base
    method, _ = load_method(base, precision="fp32")
    codec = method.ctx.codec
    batch = collate([WindowDataset(data, FRAMES, K, stride=FRAMES)[j] for j in range(2)])
    last = codec.encode(batch.first)[:, :, -1:].expand(-1, -1, FRAMES - K, -1, -1)
    seen = []

    def record(x_i, i, first, actions):
        seen.append((int(i[0]), x_i.clone()))
        return method.diffusion.from_x0(last, x_i, i), {}

    monkeypatch.setattr(method, "predict", record)
    roll = sample_videos(method, batch.first, batch.actions, SampleConfig(steps=1, batch_size=2, start_step=0),
                         progress=False)
    assert [t for t, _ in seen] == [0]
    noise = (1 - method.diffusion.alphas_cumprod[0]).sqrt()
    assert float((seen[0][1] - last).abs().mean()) < 2 * float(noise) < 0.2 * float(last.abs().mean())
    torch.testing.assert_close(roll.videos, codec.decode(last).clamp(-1, 1), atol=1e-4, rtol=0)


def test_a_latent_evaluation_also_scores_copy_last_through_the_codec(tmp_path, latent_base):
    """Every table of a latent base closes with copy-last and with copy-last after the black box's
    encode/decode: the score of a latent model that predicts "nothing moves" exactly."""
    from avid.metrics import frame_metrics
    from avid.pipelines.evaluate import COPY_LAST, COPY_LAST_CODEC, copy_last_frame, evaluate, to01

    data, _, base = latent_base
    method, _ = load_method(base, precision="fp32")
    codec = method.ctx.codec
    batch = collate([WindowDataset(data, FRAMES, K, stride=FRAMES)[j] for j in range(2)])
    res = evaluate({"base": method}, batch, SampleConfig(steps=1, batch_size=2), tmp_path / "report")
    through = codec.decode(codec.encode(batch.first[:, :, -1:])).clamp(-1, 1).expand_as(batch.x0)
    expected = frame_metrics(to01(batch.x0), to01(through))
    assert res.metrics[COPY_LAST_CODEC]["psnr"] == pytest.approx(expected["psnr"], abs=1e-4)
    plain = frame_metrics(to01(batch.x0), to01(copy_last_frame(batch)))["psnr"]
    assert res.metrics[COPY_LAST]["psnr"] == pytest.approx(plain, abs=1e-4) and plain != expected["psnr"]
    table = (tmp_path / "report" / "metrics.md").read_text()
    assert f"| {COPY_LAST_CODEC} |" in table and table.index(f"| {COPY_LAST} |") < table.index(f"| {COPY_LAST_CODEC} |")


def test_codec_eval_scores_each_codec_s_reconstruction_and_copy_last_through_it(tmp_path, latent_base, tiny_base,
                                                                              capsys):
    """`avid codec eval`: per codec (its folder, or a latent base model's), the reconstruction and
    copy-last through it, beside copy-last itself; a folder holding no codec is refused in one line."""
    from avid.cli import main
    from avid.metrics import frame_metrics
    from avid.pipelines.codec_eval import RECONSTRUCT_CHUNK, codec_rows
    from avid.pipelines.evaluate import COPY_LAST, COPY_LAST_CODEC, copy_last_frame, reconstruct, to01

    data, codec_dir, base = latent_base
    main(["codec", "eval", "--codec", str(codec_dir), str(base), "--data", data, "--out", str(tmp_path / "r"),
          "--frames", str(FRAMES), "--limit", "2"])
    table = (tmp_path / "r" / "codecs.md").read_text()
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "r" / "codecs.csv").open())}
    assert set(rows) == {COPY_LAST, f"{codec_dir}: reconstruction", f"{codec_dir}: {COPY_LAST_CODEC}",
                         f"{base}: reconstruction", f"{base}: {COPY_LAST_CODEC}"}
    # the base model's folder serves its codec/ subfolder: the same codec, the same numbers
    assert ({k: v for k, v in rows[f"{codec_dir}: reconstruction"].items() if k != "method"}
            == {k: v for k, v in rows[f"{base}: reconstruction"].items() if k != "method"})
    layout = f"2 trajectories of `{data}`, windows of {FRAMES} frames: 1 conditioning, {FRAMES - 1} predicted"
    assert "held-out MSE" in table and layout in table

    codec, _ = load_codec(codec_dir)
    batch = collate([WindowDataset(data, FRAMES, 1, stride=FRAMES)[j] for j in range(2)])
    got = {r.method: r.values for r in codec_rows(batch, {"c": codec}, "n/a (test)")}
    real = to01(batch.x0)
    rec = frame_metrics(real, to01(reconstruct(codec, batch.x0, chunk=RECONSTRUCT_CHUNK)))
    assert got["c: reconstruction"]["psnr"] == pytest.approx(rec["psnr"], abs=1e-4)
    assert got["c: reconstruction"]["ssim"] == pytest.approx(rec["ssim"], abs=1e-5)
    assert got[COPY_LAST]["psnr"] == pytest.approx(frame_metrics(real, to01(copy_last_frame(batch)))["psnr"], abs=1e-4)
    assert got["c: reconstruction"]["psnr"] != pytest.approx(got[f"c: {COPY_LAST_CODEC}"]["psnr"], abs=1e-3)
    lo, hi = got["c: reconstruction"]["psnr_ci"]
    assert lo <= got["c: reconstruction"]["psnr"] <= hi and got["c: reconstruction"]["lpips"] == "n/a (test)"

    capsys.readouterr()
    with pytest.raises(SystemExit):  # a pixel base model holds no codec
        main(["codec", "eval", "--codec", str(tiny_base), "--data", data, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a codec" in err and not (tmp_path / "x").exists()
