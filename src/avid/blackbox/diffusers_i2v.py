"""A third-party provider: a diffusers image-to-video model in the Stable Video Diffusion layout.

The folder is what ``StableVideoDiffusionPipeline.save_pretrained`` writes (no download: it must
be on disk)::

    model_index.json
    unet/               UNetSpatioTemporalConditionModel: config.json + diffusion_pytorch_model.safetensors
    vae/                AutoencoderKLTemporalDecoder (the codec)
    image_encoder/      transformers' CLIPVisionModelWithProjection (conditions on the first frame)
    scheduler/          EulerDiscreteScheduler config: v prediction, "scaled_linear" betas
    feature_extractor/  CLIP preprocessing (its image_mean / image_std are used)
    avid.yaml           optional: fps (default 7), motion_bucket_id (127), noise_aug_strength (0.02)

It answers in its latent space (``spec.latent``): ``x_i`` is ``(B, 4, T, h, w)`` latents scaled by
the VAE's ``scaling_factor`` (what ``codec.encode`` returns), ``first`` is the first frame's latent
``(B, 4, 1, h, w)``, and the prediction is ``v`` of the discrete process the scheduler's betas
define. SVD's sampler works in EDM form (``x = x0 + sigma * eps``, input scaled by
``1 / sqrt(sigma^2 + 1)``, time ``0.25 log sigma``); with ``sigma_i = sqrt((1 - a_i) / a_i)`` its
scaled input is exactly our ``x_i`` and its v-output is exactly our ``v``, so no conversion is needed.
The first frame conditions the model as in the SVD pipeline: CLIP embeddings of the clean frame,
and VAE latents of the frame with ``noise_aug_strength`` Gaussian noise added (the noise drawn from
a seed of the frame's own bytes, so the same query always gets the same answer). No classifier-free
guidance: that is a sampling choice of the caller.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import yaml

from avid.blackbox.denoiser import DenoiserSpec, check_denoise_inputs
from avid.precision import resolve_precision
from avid.checkpoint import sha256
from avid.diffusion import Diffusion, DiffusionConfig

SCHEDULE = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
OPTIONS = {"fps": 7, "motion_bucket_id": 127, "noise_aug_strength": 0.02}
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def _diffusion(folder: Path) -> tuple[DiffusionConfig, bool]:
    """The discrete process of the scheduler's config, and whether the UNet takes 0.25 log sigma."""
    cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    if cfg.get("prediction_type") != "v_prediction":
        raise ValueError(f"{folder}: expected a v-prediction scheduler, got {cfg.get('prediction_type')!r}")
    differ = {k: (cfg.get(k), v) for k, v in SCHEDULE.items() if cfg.get(k, v) != v}
    if differ:
        raise ValueError(f"{folder}: scheduler settings {differ} (got, supported) differ from SVD's")
    return (DiffusionConfig(num_steps=int(cfg.get("num_train_timesteps", 1000)), schedule="scaled_linear", param="v"),
            cfg.get("timestep_type") == "continuous")


class DiffusersI2VProvider:
    def __init__(self, folder: str | Path, precision: str = "auto", device: str = "cpu") -> None:
        self.precision = resolve_precision(precision, device)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub id fails at once instead of retrying
        from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
        from transformers import CLIPVisionModelWithProjection

        folder = Path(folder)
        missing = [d for d in ("unet", "vae", "image_encoder", "scheduler") if not (folder / d).is_dir()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {missing} (expected the Stable Video Diffusion folder layout)")
        self.device = torch.device(device)
        load = {"local_files_only": True}
        self.unet = UNetSpatioTemporalConditionModel.from_pretrained(folder / "unet", **load).eval().to(device)
        self.vae = AutoencoderKLTemporalDecoder.from_pretrained(folder / "vae", **load).eval().to(device)
        self.image_encoder = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder", **load).eval().to(device)
        for m in (self.unet, self.vae, self.image_encoder):
            m.requires_grad_(False)
        options = yaml.safe_load((folder / "avid.yaml").read_text()) if (folder / "avid.yaml").exists() else {}
        self.options = {**OPTIONS, **(options or {})}
        fe = folder / "feature_extractor" / "preprocessor_config.json"
        fe = json.loads(fe.read_text()) if fe.exists() else {}
        self.clip_mean = torch.tensor(fe.get("image_mean", CLIP_MEAN)).view(1, 3, 1, 1)
        self.clip_std = torch.tensor(fe.get("image_std", CLIP_STD)).view(1, 3, 1, 1)
        diffusion, self.continuous_time = _diffusion(folder)
        self.sigmas = ((1 - Diffusion(diffusion).alphas_cumprod) / Diffusion(diffusion).alphas_cumprod).sqrt()
        self.scale = float(self.vae.config.scaling_factor)
        self.spec = DenoiserSpec(diffusion=diffusion, channels=int(self.unet.config.out_channels), cond_frames=1,
                                 frame_size=int(self.unet.config.sample_size), max_frames=int(self.unet.config.num_frames),
                                 fingerprint=_fingerprint(folder), latent=True,
                                 pixel_size=int(self.unet.config.sample_size) * 2 ** (len(self.vae.config.block_out_channels) - 1))
        self._conditions: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _autocast(self):
        return self.precision.autocast()

    # ---- the codec -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` in [-1, 1] -> scaled latents ``(B, C, T, h, w)`` (the posterior's mode)."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected a video (B, 3, T, H, W), got {tuple(video.shape)}")
        b, _, t = video.shape[:3]
        frames = video.transpose(1, 2).flatten(0, 1).to(self.device).float()
        with self._autocast():
            z = self.vae.encode(frames).latent_dist.mode()
        return (z.float() * self.scale).unflatten(0, (b, t)).transpose(1, 2)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``(B, C, T, h, w)`` -> video ``(B, 3, T, H, W)``."""
        if latent.ndim != 5 or latent.shape[1] != self.spec.channels:
            raise ValueError(f"expected latents (B, {self.spec.channels}, T, h, w), got {tuple(latent.shape)}")
        b, _, t = latent.shape[:3]
        z = latent.transpose(1, 2).flatten(0, 1).to(self.device).float() / self.scale
        with self._autocast():
            frames = self.vae.decode(z, num_frames=t).sample
        return frames.float().unflatten(0, (b, t)).transpose(1, 2)

    # ---- conditioning on the first frame (as the SVD pipeline does) --------------------------------
    def _condition(self, first_latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP embedding ``(1, 1, D)`` of the frame and the VAE latent ``(1, C, h, w)`` of the
        noise-augmented frame, for one first-frame latent ``(C, 1, h, w)``; cached by its bytes."""
        # the pipeline's own resize (private in diffusers), so CLIP sees what it sees in the pipeline
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing

        key = hashlib.sha256(first_latent.float().cpu().numpy().tobytes()).hexdigest()
        if key not in self._conditions:
            image = self.decode(first_latent[None])[:, :, 0]  # (1, 3, H, W) in [-1, 1]
            size = self.image_encoder.config.image_size
            clip_in = (_resize_with_antialiasing(image, (size, size)) + 1) / 2
            clip_in = (clip_in - self.clip_mean.to(image.device)) / self.clip_std.to(image.device)
            g = torch.Generator().manual_seed(int(key[:15], 16))
            noisy = image + self.options["noise_aug_strength"] * torch.randn(image.shape, generator=g).to(image.device)
            with self._autocast():
                embedding = self.image_encoder(clip_in).image_embeds.float()[:, None]
                latent = self.vae.encode(noisy).latent_dist.mode().float()
            if len(self._conditions) >= 256:
                self._conditions.pop(next(iter(self._conditions)))
            self._conditions[key] = (embedding, latent)
        return self._conditions[key]

    @torch.no_grad()
    def denoise(self, x_i: torch.Tensor, i: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """``v`` ``(B, C, T, h, w)`` at ``x_i`` ``(B, C, T, h, w)``, steps ``i`` ``(B,)``, first-frame latents ``(B, C, 1, h, w)``."""
        check_denoise_inputs(self.spec, x_i, i, first)
        x_i, first = x_i.to(self.device).float(), first.to(self.device).float()
        embeddings, latents = zip(*(self._condition(f) for f in first))
        t = x_i.shape[2]
        cond = torch.cat(latents)[:, None].expand(-1, t, -1, -1, -1)  # (B, T, C, h, w)
        sample = torch.cat([x_i.transpose(1, 2), cond], dim=2)  # x_i is SVD's scaled EDM input, see above
        sigma = self.sigmas[i.cpu()].to(self.device)
        timestep = 0.25 * sigma.log() if self.continuous_time else i.to(self.device).float()
        o = self.options
        time_ids = torch.tensor([[o["fps"] - 1, o["motion_bucket_id"], o["noise_aug_strength"]]], device=self.device)
        with self._autocast():
            v = self.unet(sample, timestep, torch.cat(embeddings), time_ids.expand(len(x_i), -1)).sample
        return v.float().transpose(1, 2)


def _fingerprint(folder: Path) -> str:
    """A hash of every weight and config file of the folder (names and contents)."""
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(folder)).encode())
        h.update(sha256(p).encode())
    return h.hexdigest()

