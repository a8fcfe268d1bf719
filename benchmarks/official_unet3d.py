"""Ours against the official AVID code's network, step for step, on this machine.

The official AVID code (microsoft/causica, research_experiments/avid/pixel_diffusion) builds its
networks with Video Diffusion Models' ``Unet3D`` as packaged by lucidrains' video-diffusion-pytorch
(0.7.0: RMSNorm blocks). That package is NOT a dependency of avid; install it apart, e.g.

    pip download video-diffusion-pytorch==0.7.0 einops-exts rotary-embedding-torch --no-deps -d /tmp/vdp
    for w in /tmp/vdp/*.whl; do python -m zipfile -e $w /tmp/vdp/site; done

then, one thread, fp32, batch 1 of 8 predicted frames at 64x64, widths 32 on both sides:

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/official_unet3d.py --official /tmp/vdp/site --width 32

Official side, as the official configs build it: the base ``Unet3D(dim, dim_mults=(1, 2, 4, 8),
attn_heads=8, attn_dim_head=64)`` on ``x_i`` and 2 first frames (9 channels, out 3) and the adapter
``Unet3D(dim, attn_heads=4, attn_dim_head=50)`` on ``x_i``, ``out_pre`` and the first frames (12
channels, out 4), each with a conditioning vector of ``4 dim`` beside its ``4 dim`` step embedding
(the official code's action embedding width; here one vector per video from an action embedding
table averaged over frames, where the official code FiLMs each frame with its own: the same
parameters and nearly the same work). Ours: ``configs/sizes/<--preset>.yaml`` at the same width.
The package imports torchvision at module level for its data loading; the network does not use it,
so a stand-in module is installed when torchvision does not import.
"""

from __future__ import annotations

import argparse
import json
import sys
import types

import torch
from torch import nn

from avid.pipelines.bench_networks import NUM_ACTIONS, Entry, Shape, compiled, format_rows, preset_networks, time_steps
from avid.precision import cpu_info


def _import_unet3d(path: str | None):
    if path:
        sys.path.insert(0, path)
    try:
        import torchvision  # noqa: F401
    except Exception:  # not importable beside this torch: the network does not need it
        tv = types.ModuleType("torchvision")
        tv.transforms, tv.utils = types.ModuleType("torchvision.transforms"), types.ModuleType("torchvision.utils")
        tv.transforms.ToTensor = lambda: None
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms, "torchvision.utils": tv.utils})
    from video_diffusion_pytorch import Unet3D

    return Unet3D


class OfficialBase(nn.Module):
    """``base(x (B, 9, T, H, W), i (B,))`` -> ``(B, 3, T, H, W)``; the null action vector as conditioning."""

    def __init__(self, unet3d, dim: int) -> None:
        super().__init__()
        self.net = unet3d(dim=dim, dim_mults=(1, 2, 4, 8), channels=9, out_dim=3, attn_heads=8, attn_dim_head=64,
                          cond_dim=4 * dim)
        self.null_action = nn.Parameter(torch.randn(4 * dim))

    def forward(self, x, i):
        return self.net(x, i.float(), cond=self.null_action.expand(x.shape[0], -1))


class OfficialAdapter(nn.Module):
    """``adapter(x (B, 12, T, H, W), i (B,), actions (B, T))`` -> ``(B, 4, T, H, W)``."""

    def __init__(self, unet3d, dim: int) -> None:
        super().__init__()
        self.net = unet3d(dim=dim, dim_mults=(1, 2, 4, 8), channels=12, out_dim=4, attn_heads=4, attn_dim_head=50,
                          cond_dim=4 * dim)
        self.action = nn.Embedding(NUM_ACTIONS, 4 * dim)

    def forward(self, x, i, actions):
        return self.net(x, i.float(), cond=self.action(actions).mean(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", default=None, help="folder holding the video_diffusion_pytorch package and its deps")
    ap.add_argument("--preset", default="paper-22m", help="our size preset at the same width")
    ap.add_argument("--also", nargs="*", default=["cpu-small"], help="further presets of ours, at their own widths")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true", help="also both implementations through torch.compile")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    unet3d = _import_unet3d(args.official)
    torch.manual_seed(0)
    entries = [Entry(f"official Unet3D, dim {args.width}", OfficialBase(unet3d, args.width),
                     OfficialAdapter(unet3d, args.width)),
               Entry(f"ours, {args.preset} @ width {args.width}", *preset_networks(args.preset, args.width))]
    torch.manual_seed(0)
    entries.append(Entry(f"ours, {args.preset} @ width {args.width}, channels-last",
                         *preset_networks(args.preset, args.width), channels_last=True))
    entries += [Entry(f"ours, {p}", *preset_networks(p)) for p in args.also]
    if args.compile:
        entries += [compiled(e) for e in entries[:3]]
    rows = time_steps(entries, Shape(args.batch, args.frames, args.size), args.precision, repeats=args.repeats,
                      device=args.device)
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_info(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
