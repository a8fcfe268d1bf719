"""The small autoencoder the project trains and ships as a latent model's codec (the robot domain's
stand-in for Stable Diffusion's autoencoder under DynamiCrafter, paper section 9.2).

Frames are encoded one by one (2D convolutions; time is folded into the batch): ``(B, 3, T, H, W)``
pixels in [-1, 1] -> ``(B, latent_channels, T, H / f, W / f)`` with ``f = 2 ** (levels - 1)``. As
Stable Diffusion does, latents are multiplied by ``scale`` (set after training to one over their
standard deviation on the training frames), so diffusion sees latents of about unit variance.
Training: mean squared reconstruction error plus a small penalty on the latents' size, and optionally
a structural term (``ssim_weight`` times 1 - SSIM; Stable Diffusion's autoencoder had a perceptual one)
against the blur an MSE-only codec leaves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure as structural_similarity

from avid.nn.blocks import group_norm


@dataclass
class AutoencoderConfig:
    channels: int = 3
    latent_channels: int = 4
    base_channels: int = 32
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])  # 3 levels: 64px -> 16px latents
    groups: int = 8
    latent_penalty: float = 1e-4  # weight of mean(z^2) in the training loss
    ssim_weight: float = 0.0  # weight of 1 - SSIM (frames in [0, 1]) beside the MSE: a structural term against blur

    def __post_init__(self) -> None:
        self.channel_mults = list(self.channel_mults)
        if self.ssim_weight < 0:
            raise ValueError(f"ssim_weight must be >= 0, got {self.ssim_weight}")
        if not self.channel_mults or self.latent_channels < 1:
            raise ValueError(f"need channel_mults and latent_channels >= 1, got {self.channel_mults}, "
                             f"{self.latent_channels}")

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)

    def to_dict(self) -> dict:
        return asdict(self)


class _Res2d(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(group_norm(cin, groups), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                  group_norm(cout, groups), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def frame_ssim(recon: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of frames ``(N, C, H, W)`` in [-1, 1], differentiable, in float32 with autocast off:
    SSIM's variances are means of squares minus squared means, which bf16 convolutions cancel to noise
    (a codec's reconstructions: 0.93 in float32, -0.51 under bf16 autocast)."""
    with torch.autocast(recon.device.type, enabled=False):
        return structural_similarity((recon.float() + 1) / 2, (frames.float() + 1) / 2, data_range=1.0)


class Autoencoder(nn.Module):
    name = "codec"

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        chs = [cfg.base_channels * m for m in cfg.channel_mults]
        enc: list[nn.Module] = [nn.Conv2d(cfg.channels, chs[0], 3, padding=1)]
        for lvl, c in enumerate(chs):
            enc.append(_Res2d(chs[max(lvl - 1, 0)], c, cfg.groups))
            if lvl < len(chs) - 1:
                enc.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        enc += [group_norm(chs[-1], cfg.groups), nn.SiLU(), nn.Conv2d(chs[-1], cfg.latent_channels, 1)]
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, chs[-1], 3, padding=1)]
        for lvl in reversed(range(len(chs))):
            dec.append(_Res2d(chs[min(lvl + 1, len(chs) - 1)], chs[lvl], cfg.groups))
            if lvl > 0:
                dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(chs[lvl], chs[lvl], 3, padding=1)]
        dec += [group_norm(chs[0], cfg.groups), nn.SiLU(), nn.Conv2d(chs[0], cfg.channels, 3, padding=1)]
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)
        self.register_buffer("scale", torch.ones(()))  # latents' 1 / std on the training frames

    def _check(self, x: torch.Tensor, channels: int, what: str) -> None:
        f = self.cfg.factor
        if x.ndim != 5 or x.shape[1] != channels or (what == "video" and (x.shape[-1] % f or x.shape[-2] % f)):
            raise ValueError(f"expected a {what} (B, {channels}, T, H, W){f' with H, W divisible by {f}' if what == 'video' else ''}, "
                             f"got {tuple(x.shape)}")

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` in [-1, 1] -> scaled latents ``(B, c, T, H / f, W / f)``."""
        self._check(video, self.cfg.channels, "video")
        b = video.shape[0]
        z = self.encoder(rearrange(video, "b c t h w -> (b t) c h w"))
        return rearrange(z, "(b t) c h w -> b c t h w", b=b) * self.scale

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``(B, c, T, h, w)`` -> ``(B, C, T, h f, w f)`` in [-1, 1]."""
        self._check(latent, self.cfg.latent_channels, "latent")
        b = latent.shape[0]
        x = self.decoder(rearrange(latent / self.scale, "b c t h w -> (b t) c h w"))
        return rearrange(x, "(b t) c h w -> b c t h w", b=b).clamp(-1, 1)

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction of every frame of a ``Batch`` (first frames and the frames after them)."""
        video = torch.cat([batch.first, batch.x0], dim=2)
        self._check(video, self.cfg.channels, "video")
        frames = rearrange(video, "b c t h w -> (b t) c h w")
        z = self.encoder(frames)
        recon = self.decoder(z)
        mse = F.mse_loss(recon, frames)
        loss = mse + self.cfg.latent_penalty * z.pow(2).mean()
        logs = {"mse": float(mse.detach())}
        if self.cfg.ssim_weight:
            ssim = frame_ssim(recon, frames)
            loss = loss + self.cfg.ssim_weight * (1 - ssim)
            logs["ssim"] = float(ssim.detach())
        return loss, {"loss": float(loss.detach()), **logs}

    @torch.no_grad()
    def fit_scale(self, videos: torch.Tensor) -> float:
        """Set ``scale`` to one over the standard deviation of the unscaled latents of ``videos``."""
        self.scale.fill_(1.0)
        self.scale.fill_(1.0 / float(self.encode(videos).float().std().clamp_min(1e-6)))
        return float(self.scale)
