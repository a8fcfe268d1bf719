"""Moving a frame by a flow field: the motion path of a residual adapter (``AVID(motion=True)``).

Most of what changes between Coinrun frames is the camera following the agent (falls and jumps move
the whole view by several pixels per frame); a network that outputs where each pixel of the last
frame goes can say "the view moves 6 pixels up" with one number per region, where a pixel output
must redraw the frame. A flow of zero is the identity, so a zero-initialised flow head starts as
"nothing moves".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def warp_frame(frame: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``frame`` ``(B, C, H, W)`` moved by ``flow`` ``(B, 2, T, H, W)`` (pixels; channel 0 across,
    channel 1 down): output pixel ``(y, x)`` of time ``t`` reads ``frame`` at ``(y - flow_y, x - flow_x)``
    (bilinear, borders repeated). Returns ``(B, C, T, H, W)``."""
    b, c, h, w = frame.shape
    t = flow.shape[2]
    if flow.shape[0] != b or flow.shape[1] != 2 or flow.shape[3:] != (h, w):
        raise ValueError(f"flow must be (B, 2, T, H, W) = ({b}, 2, T, {h}, {w}), got {tuple(flow.shape)}")
    flow = flow.float().permute(0, 2, 3, 4, 1).reshape(b * t, h, w, 2)
    ys, xs = torch.meshgrid(torch.arange(h, device=frame.device, dtype=torch.float32),
                            torch.arange(w, device=frame.device, dtype=torch.float32), indexing="ij")
    src_x = xs - flow[..., 0]  # where each output pixel comes from
    src_y = ys - flow[..., 1]
    grid = torch.stack([(2 * src_x + 1) / w - 1, (2 * src_y + 1) / h - 1], dim=-1)  # align_corners=False
    frames = frame.float()[:, None].expand(b, t, c, h, w).reshape(b * t, c, h, w)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(b, t, c, h, w).transpose(1, 2).to(frame.dtype)
