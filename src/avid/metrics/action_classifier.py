"""The Action Error Ratio (paper section 9.3) and the action classifier it rests on.

Two encoders (``ClassifierConfig.arch``). ``"motion"`` (the shipped Coinrun classifier) reads each
transition ``tau`` at full resolution: the frames ``tau - m + 1 .. tau`` (``m = motion_frames``) and
their consecutive differences, stacked as channels, through a few strided 2D convolutions, flattened,
then an MLP shared over the predicted frames. A Coinrun button shows as a shift of a pixel or two
between consecutive frames (the camera follows the agent); with ``m = 3`` the frame before
``tau - 1`` also shows the motion the button changed (Coinrun has momentum). ``"unet"``: the encoder
half of the project's 3D UNet (``UNet3D.embed`` at a constant diffusion step 0 with no actions, then
``UNet3D.encode``), its bottleneck features flattened per frame, and an MLP that outputs, for every
predicted frame, logits over the discrete actions (Coinrun) or a prediction of the normalised
continuous action (robot arm, trained with MSE).
The MLP reads the flattened features of the two frames of a transition (``tau - 1`` and ``tau``;
the encoder's temporal convolutions and attention have already mixed the whole window into each)
and is shared over the predicted frames, so every transition trains the same weights.

Alignment is the data layer's (``avid.data.Batch``): a window is ``k`` conditioning frames
``first`` followed by ``T - k`` frames ``x0``; ``actions[:, j]`` produced ``x0[:, :, j]`` from the
frame before it. The classifier sees the whole window and answers for the ``T - k`` transitions.

    discrete:    AER = accuracy(real) / accuracy(generated)      (section 9.3)
    continuous:  AER = MAE(generated) / MAE(real)                (MAE on normalised actions)

A zero denominator (the generated videos score accuracy 0, or the real videos MAE 0) gives
``inf`` with a warning; when the numerator is 0 as well the ratio is undefined and is ``nan``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from avid.checkpoint import load_config, load_weights, resolve, save_model
from avid.nn.blocks import group_norm
from avid.nn.unet import UNet3D, UNetConfig, check_actions, count_parameters

CLASSIFIER_KIND = "avid-action-classifier"
SHIPPED_CLASSIFIER = "assets/action-classifier-coinrun"  # the Coinrun classifier this project ships


@dataclass
class ClassifierConfig:
    """Everything that rebuilds the classifier. ``unet`` holds ``UNetConfig`` fields of the encoder
    (channels, levels, attention, stem; ``arch: unet`` only); input/output channels, steps and
    actions are fixed here."""

    arch: str = "unet"  # "unet" (UNet encoder over the window) or "motion" (per-transition frame stack)
    unet: dict[str, Any] = field(default_factory=lambda: dict(
        base_channels=32, channel_mults=[1, 2, 4], patch_size=4, attn_from_level=2))
    # "motion": frames per transition (tau - motion_frames + 1 .. tau; at most cond_frames + 1), the
    # channels of its full-resolution convolution and of each stride-2 convolution after it
    motion_frames: int = 2
    motion_channels: list[int] = field(default_factory=lambda: [32, 64, 64, 128, 128])
    frames: int = 10  # T: the window the classifier reads
    cond_frames: int = 2  # k: it answers for the T - k frames after them
    frame_size: int = 64
    channels: int = 3
    action_kind: str = "discrete"  # or "continuous"
    num_actions: int = 15  # discrete: number of actions; continuous: action dimension
    proj_channels: int = 32  # 1x1x1 conv that narrows the bottleneck before flattening
    hidden: int = 256
    dropout: float = 0.1
    action_mean: list[float] | None = None  # continuous: normalisation statistics of the training set
    action_std: list[float] | None = None

    def __post_init__(self) -> None:
        if self.action_kind not in ("discrete", "continuous"):
            raise ValueError(f"action_kind must be 'discrete' or 'continuous', got {self.action_kind!r}")
        if not 1 <= self.cond_frames < self.frames:
            raise ValueError(f"need 1 <= cond_frames < frames, got {self.cond_frames}, {self.frames}")
        if self.arch not in ("unet", "motion"):
            raise ValueError(f"arch must be 'unet' or 'motion', got {self.arch!r}")
        if self.arch == "motion" and not 2 <= self.motion_frames <= self.cond_frames + 1:
            raise ValueError(f"motion_frames must lie in [2, cond_frames + 1 = {self.cond_frames + 1}] (the first "
                             f"predicted frame's transition reaches back only that far), got {self.motion_frames}")
        strides = len(self.motion_channels) - 1
        if self.arch == "motion" and (strides < 0 or self.frame_size % 2 ** strides
                                      or any(c < 1 for c in self.motion_channels)):
            raise ValueError(f"motion_channels must be positive channel counts, 2^(len - 1) dividing frame_size "
                             f"{self.frame_size}, got {self.motion_channels}")
        self.unet, self.motion_channels = dict(self.unet), list(self.motion_channels)

    @property
    def predicted(self) -> int:
        return self.frames - self.cond_frames

    def unet_config(self) -> UNetConfig:
        return UNetConfig(**{**self.unet, "in_channels": self.channels, "out_channels": self.channels,
                             "num_steps": 1, "max_frames": self.frames, "action_kind": "none"})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MotionEncoder(nn.Module):
    """``(B, C, T, H, W)`` window -> ``(B, T - k, F)``: for each predicted frame ``tau`` the frames
    ``tau - m + 1 .. tau`` and their ``m - 1`` consecutive differences as ``(2m - 1) C`` channels, a
    3x3 convolution at full resolution, then 4x4 stride-2 convolutions (GroupNorm, SiLU), flattened."""

    def __init__(self, cfg: "ClassifierConfig") -> None:
        super().__init__()
        self.m, self.k = cfg.motion_frames, cfg.cond_frames
        chs = cfg.motion_channels
        layers: list[nn.Module] = [nn.Conv2d((2 * self.m - 1) * cfg.channels, chs[0], 3, padding=1)]
        for a, b in zip(chs[:-1], chs[1:]):
            layers += [group_norm(a, 8), nn.SiLU(), nn.Conv2d(a, b, 4, stride=2, padding=1)]
        layers += [group_norm(chs[-1], 8), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.features = chs[-1] * (cfg.frame_size // 2 ** (len(chs) - 1)) ** 2

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        t = video.shape[2]
        stack = torch.stack([video[:, :, self.k - self.m + 1 + j: t - self.m + 1 + j] for j in range(self.m)], 2)
        x = torch.cat([stack, stack.diff(dim=2)], 2)  # (B, C, 2m - 1, T - k, H, W)
        x = rearrange(x, "b c s t h w -> (b t) (s c) h w")
        return rearrange(self.net(x), "(b t) c h w -> b t (c h w)", t=t - self.k)


class ActionClassifier(nn.Module):
    """``(B, C, T, H, W)`` window in [-1, 1] -> ``(B, T - k, num_actions)``: logits (discrete) or
    normalised action predictions (continuous), aligned with the window's last ``T - k`` frames."""

    name = "action-classifier"

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.arch == "motion":
            self.motion = MotionEncoder(cfg)
            features = self.motion.features
        else:
            ucfg = cfg.unet_config()
            self.encoder = UNet3D(ucfg)
            self.encoder.up, self.encoder.head = nn.ModuleList(), nn.Identity()  # the decoder half is unused
            side = cfg.frame_size // ucfg.downscale
            if side * ucfg.downscale != cfg.frame_size:
                raise ValueError(f"frame_size {cfg.frame_size} must be divisible by the encoder's downscale {ucfg.downscale}")
            chs = ucfg.base_channels * ucfg.channel_mults[-1]
            self.proj = nn.Sequential(group_norm(chs, ucfg.groups), nn.SiLU(),
                                      nn.Conv3d(chs, cfg.proj_channels, 1))
            features = 2 * cfg.proj_channels * side * side
        self.mlp = nn.Sequential(
            nn.Linear(features, cfg.hidden), nn.SiLU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.num_actions))
        if cfg.action_kind == "continuous":
            a = cfg.num_actions
            mean = torch.tensor(cfg.action_mean if cfg.action_mean is not None else [0.0] * a)
            std = torch.tensor(cfg.action_std if cfg.action_std is not None else [1.0] * a)
            if mean.shape != (a,) or std.shape != (a,) or bool((std <= 0).any()):
                raise ValueError(f"action_mean/action_std must be {a} values with std > 0")
            self.register_buffer("action_mean", mean, persistent=False)
            self.register_buffer("action_std", std, persistent=False)

    @property
    def discrete(self) -> bool:
        return self.cfg.action_kind == "discrete"

    def check_window(self, video: torch.Tensor) -> None:
        c = self.cfg
        want = (c.channels, c.frames, c.frame_size, c.frame_size)
        if video.ndim != 5 or tuple(video.shape[1:]) != want:
            raise ValueError(f"expected a window (B, {', '.join(map(str, want))}), got {tuple(video.shape)}")

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        self.check_window(video)
        if self.cfg.arch == "motion":
            return self.mlp(self.motion(video))
        b = video.shape[0]
        i = torch.zeros(b, dtype=torch.long, device=video.device)  # constant step 0, no actions
        cond = self.encoder.embed(i, None, self.cfg.frames)
        h, _ = self.encoder.encode(video, cond)
        f = rearrange(self.proj(h), "b c t h w -> b t (c h w)")  # per-frame flattened encoding
        k = self.cfg.cond_frames
        return self.mlp(torch.cat([f[:, k - 1:-1], f[:, k:]], dim=-1))  # transitions tau-1 -> tau

    def window(self, first: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """Conditioning frames ``(B, C, k, H, W)`` + predicted frames ``(B, C, T - k, H, W)``."""
        if first.ndim != 5 or video.ndim != 5 or first.shape[2] != self.cfg.cond_frames \
                or video.shape[2] != self.cfg.predicted or first.shape[0] != video.shape[0]:
            raise ValueError(f"expected first (B, C, {self.cfg.cond_frames}, H, W) and video "
                             f"(B, C, {self.cfg.predicted}, H, W), got {tuple(first.shape)} and {tuple(video.shape)}")
        return torch.cat([first, video], dim=2)

    def normalise(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions.float() - self.action_mean) / self.action_std

    def check_actions(self, actions: torch.Tensor, b: int) -> None:
        check_actions(actions, b, self.cfg.predicted, self.cfg.action_kind, self.cfg.num_actions)

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Cross-entropy (discrete) or MSE on normalised actions (continuous) of a ``Batch``."""
        self.check_actions(batch.actions, len(batch))
        out = self(self.window(batch.first, batch.x0)).float()
        if self.discrete:
            loss = F.cross_entropy(out.flatten(0, 1), batch.actions.flatten())
            acc = (out.argmax(-1) == batch.actions).float().mean()
            return loss, {"loss": loss.detach(), "acc": acc}
        target = self.normalise(batch.actions)
        loss = F.mse_loss(out, target)
        return loss, {"loss": loss.detach(), "mae": (out - target).abs().mean().detach()}


# ---- the metric ---------------------------------------------------------------------------------

@torch.no_grad()
def action_scores(clf: ActionClassifier, first: torch.Tensor, video: torch.Tensor, actions: torch.Tensor,
                  batch_size: int = 64, classes: list[int] | None = None) -> torch.Tensor:
    """Per video ``(N,)``: the fraction of its transitions whose action the classifier names
    (discrete) or the MAE of its predicted normalised actions (continuous). ``classes`` (discrete
    only): the equivalence class of every action (``avid.data.aliasing``); a transition then counts
    as named when the class with the most probability (summed over its actions) is the true
    action's class."""
    n = first.shape[0]
    clf.window(first[:1], video[:1])  # shape check before any work
    if video.shape[0] != n:
        raise ValueError(f"first has {n} videos, video has {video.shape[0]}")
    clf.check_actions(actions, n)
    if classes is not None and (not clf.discrete or len(classes) != clf.cfg.num_actions):
        raise ValueError(f"classes must give one class per action ({clf.cfg.num_actions}) of a discrete "
                         f"classifier, got {len(classes)}")
    was_training = clf.training
    clf.eval()
    p = next(clf.parameters())
    cls = None if classes is None else torch.as_tensor(classes, device=p.device)
    out_scores = []
    try:
        for s in range(0, n, batch_size):
            w = clf.window(first[s:s + batch_size], video[s:s + batch_size]).to(p.device, p.dtype)
            out = clf(w).float()
            a = actions[s:s + batch_size].to(p.device)
            if not clf.discrete:
                out_scores.append((out - clf.normalise(a)).abs().mean(-1).mean(-1))
            elif cls is None:
                out_scores.append((out.argmax(-1) == a).float().mean(-1))
            else:
                probs = out.softmax(-1)
                by_class = probs.new_zeros(*probs.shape[:-1], int(cls.max()) + 1).index_add_(-1, cls, probs)
                out_scores.append((by_class.argmax(-1) == cls[a]).float().mean(-1))
    finally:
        clf.train(was_training)
    return torch.cat(out_scores).cpu()


def action_accuracy(classifier: ActionClassifier, first: torch.Tensor, video: torch.Tensor,
                    actions: torch.Tensor, batch_size: int = 64, classes: list[int] | None = None) -> float:
    """Fraction of transitions whose action (or, with ``classes``, action class) the classifier names.
    ``first`` ``(N, C, k, H, W)``, ``video`` ``(N, C, T - k, H, W)`` in [-1, 1], ``actions``
    ``(N, T - k)`` aligned with ``video``."""
    if not classifier.discrete:
        raise ValueError("action_accuracy needs a discrete classifier; use action_mae for continuous actions")
    return float(action_scores(classifier, first, video, actions, batch_size, classes).mean())


def action_mae(regressor: ActionClassifier, first: torch.Tensor, video: torch.Tensor,
               actions: torch.Tensor, batch_size: int = 64) -> float:
    """Mean absolute error of the predicted normalised actions; ``actions`` ``(N, T - k, A)`` raw."""
    if regressor.discrete:
        raise ValueError("action_mae needs a continuous regressor; use action_accuracy for discrete actions")
    return float(action_scores(regressor, first, video, actions, batch_size).mean())


def error_ratio(real: float, generated: float, kind: str = "discrete") -> float:
    """The ratio from the two scores (section 9.3): accuracy real/generated (discrete), MAE
    generated/real (continuous). Zero denominator: ``inf`` (``nan`` if the numerator is 0 too), warned."""
    if kind not in ("discrete", "continuous"):
        raise ValueError(f"kind must be 'discrete' or 'continuous', got {kind!r}")
    num, den = (real, generated) if kind == "discrete" else (generated, real)
    if den > 0:
        return num / den
    what = "accuracy on generated videos" if kind == "discrete" else "MAE on real videos"
    if num > 0:
        warnings.warn(f"action error ratio: the {what} is 0, so the ratio is infinite", stacklevel=2)
        return math.inf
    warnings.warn(f"action error ratio: both scores are 0 ({kind}), the ratio is undefined (nan)", stacklevel=2)
    return math.nan


def action_error_ratio(classifier: ActionClassifier, first: torch.Tensor, real: torch.Tensor,
                       generated: torch.Tensor, actions: torch.Tensor, batch_size: int = 64) -> float:
    """Action Error Ratio of ``generated`` against ``real`` videos ``(N, C, T - k, H, W)`` that share
    the first frames ``(N, C, k, H, W)`` and the actions. Lower is better; 1 means as good as real."""
    score = action_accuracy if classifier.discrete else action_mae
    return error_ratio(score(classifier, first, real, actions, batch_size),
                       score(classifier, first, generated, actions, batch_size), classifier.cfg.action_kind)


# ---- model folder ------------------------------------------------------------------------------

def save_classifier(folder: str | Path, classifier: ActionClassifier, dtype: torch.dtype | None = None,
                    state: dict[str, torch.Tensor] | None = None, **info: Any) -> Path:
    """``model.safetensors`` + ``config.yaml`` (kind ``avid-action-classifier``). ``state``: other
    weights for this architecture (e.g. EMA) instead of the module's own; ``info`` (training step,
    held-out score, data, ...) is recorded in the config."""
    config = {"kind": CLASSIFIER_KIND, "classifier": classifier.cfg.to_dict(),
              "parameters": count_parameters(classifier), **info}
    return save_model(folder, classifier.state_dict() if state is None else state, config, dtype=dtype)


def load_classifier(folder: str | Path, device: str | torch.device = "cpu") -> ActionClassifier:
    """A classifier folder (float32 in memory, whatever the stored dtype), in eval mode."""
    folder = resolve(folder)
    mc = load_config(folder)
    if mc.get("kind") != CLASSIFIER_KIND:
        raise ValueError(f"{folder} is not an action classifier (config kind {mc.get('kind')!r}, "
                         f"expected {CLASSIFIER_KIND!r})")
    clf = ActionClassifier(ClassifierConfig(**mc["classifier"]))
    load_weights(folder, clf)
    return clf.to(device).eval()


__all__ = ["CLASSIFIER_KIND", "SHIPPED_CLASSIFIER", "ActionClassifier", "ClassifierConfig", "MotionEncoder", "action_accuracy", "action_error_ratio",
           "action_mae", "action_scores", "error_ratio", "load_classifier", "save_classifier"]
