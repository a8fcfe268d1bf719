"""A third-party backend: a diffusers image-to-video model (Stable Video Diffusion's layout) behind
the same door, on tiny random-initialised models built from small configs (no downloads)."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from avid.blackbox import open_denoiser  # noqa: E402
from avid.blackbox.provider import open_provider  # noqa: E402
from avid.diffusion import Diffusion  # noqa: E402
from avid.methods import Context, build_method  # noqa: E402
from avid.data import Batch  # noqa: E402
from tests.conftest import TINY_UNET  # noqa: E402

torch.set_num_threads(1)
LATENT, PIXELS, FRAMES = 8, 16, 4


def make_svd(folder):
    """A tiny random Stable Video Diffusion pipeline saved as diffusers saves one."""
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline,
                           UNetSpatioTemporalConditionModel)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=LATENT, in_channels=8, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=16,
        num_attention_heads=(2, 4), addition_time_embed_dim=4, projection_class_embeddings_input_dim=12,
        num_frames=8)
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                                       latent_channels=4, sample_size=PIXELS)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=16))
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       prediction_type="v_prediction", timestep_type="continuous",
                                       interpolation_type="linear", use_karras_sigmas=False)
    StableVideoDiffusionPipeline(vae=vae, image_encoder=encoder, unet=unet, scheduler=scheduler,
                                 feature_extractor=CLIPImageProcessor()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def svd(tmp_path_factory):
    return make_svd(tmp_path_factory.mktemp("svd") / "model")


def query(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 4, FRAMES, LATENT, LATENT, generator=g), torch.tensor([10, 900][:b]),
            torch.randn(b, 4, 1, LATENT, LATENT, generator=g))


def test_the_folder_loads_as_a_latent_v_prediction_black_box_with_its_vae_as_codec(svd):
    p = open_provider(svd, precision="fp32")
    s = p.spec
    assert (s.latent, s.channels, s.cond_frames, s.frame_size, s.max_frames) == (True, 4, 1, LATENT, 8)
    assert (s.diffusion.param, s.diffusion.schedule, s.diffusion.num_steps) == ("v", "scaled_linear", 1000)
    video = torch.rand(2, 3, FRAMES, PIXELS, PIXELS) * 2 - 1
    latent = p.encode(video)
    assert latent.shape == (2, 4, FRAMES, LATENT, LATENT) and p.decode(latent).shape == video.shape
    x_i, i, first = query()
    out = p.denoise(x_i, i, first)
    assert out.shape == x_i.shape and torch.isfinite(out).all()
    assert torch.equal(p.denoise(x_i, i, first), out)  # a function of its inputs (the noise augmentation too)
    one = p.denoise(x_i[1:], i[1:], first[1:])
    assert torch.allclose(out[1:], one, atol=1e-5)  # each video answered on its own


def test_its_output_is_v_in_the_process_it_publishes_as_the_svd_scheduler_reads_it(svd):
    """Our x_i and v are the scheduler's scaled input and v: its x0 estimate equals ours, and the
    UNet is given the scheduler's time 0.25 log sigma."""
    from diffusers import EulerDiscreteScheduler

    p = open_provider(svd, precision="fp32")
    sched = EulerDiscreteScheduler.from_pretrained(svd / "scheduler")
    sched.set_timesteps(1000)  # every training step: sigmas[k] belongs to step 999 - k
    d = Diffusion(p.spec.diffusion)
    seen = []
    forward = p.unet.forward
    p.unet.forward = lambda sample, timestep, *a, **k: seen.append(timestep) or forward(sample, timestep, *a, **k)
    for step in (5, 400, 990):
        x_i, _, first = query(b=1, seed=step)
        i = torch.tensor([step])
        v = p.denoise(x_i, i, first)
        k = 999 - step
        sigma = sched.sigmas[k]
        assert torch.allclose(seen[-1], sched.timesteps[k], atol=1e-4)
        sched._step_index = k
        x_edm = x_i * (sigma**2 + 1).sqrt()  # the scheduler's unscaled sample
        x0 = sched.step(v.transpose(1, 2), sched.timesteps[k], x_edm.transpose(1, 2)).pred_original_sample
        assert torch.allclose(x0.transpose(1, 2), d.to_x0(v, x_i, i), atol=1e-4, rtol=1e-3)


def test_behind_the_door_in_a_worker_process_an_avid_adapter_trains_on_its_latents(svd):
    denoiser = open_denoiser(svd, precision="fp32")
    x_i, i, first = query()
    assert torch.allclose(denoiser(x_i, i, first), open_provider(svd, precision="fp32").denoise(x_i, i, first), atol=1e-6)
    video = torch.rand(2, 3, FRAMES + 1, PIXELS, PIXELS) * 2 - 1
    latent = denoiser.codec.encode(video)  # the provider's VAE, queried like the denoiser
    assert latent.shape == (2, 4, FRAMES + 1, LATENT, LATENT) and denoiser.codec.decode(latent).shape == video.shape
    ctx = Context(diffusion=Diffusion(denoiser.spec.diffusion), channels=4, cond_frames=1, num_actions=5, base=denoiser)
    avid = build_method("avid", ctx, {"unet": {**TINY_UNET, "patch_size": 1}})
    loss, logs = avid.loss(Batch(latent[:, :, :1], latent[:, :, 1:], torch.randint(0, 5, (2, FRAMES))))
    loss.backward()
    assert torch.isfinite(loss) and 0 < logs["mask_mean"] < 1
    assert denoiser.stats.calls == 4 and denoiser.stats.frames == 2 * (FRAMES + 1) * 2 + 2 * FRAMES + 2 * FRAMES
