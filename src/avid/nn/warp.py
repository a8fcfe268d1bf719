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


def shift_frame(frame: torch.Tensor, p_y: torch.Tensor, p_x: torch.Tensor) -> torch.Tensor:
    """``frame`` ``(B, C, H, W)`` moved as a whole by integer shifts, averaged over a distribution of
    them: output ``t`` is ``sum_{dy, dx} p_y[b, t, dy] p_x[b, t, dx] * frame shifted by (dy, dx)``,
    where a shift by ``(dy, dx)`` reads pixel ``(y - dy, x - dx)`` (borders repeated). ``p_y``
    ``(B, T, 2Ry + 1)`` and ``p_x`` ``(B, T, 2Rx + 1)`` are probabilities over shifts ``-R .. R`` on
    each axis (index ``R`` is "no move").

    Unlike a bilinear warp, whose gradient sees only a pixel's neighbours, every candidate shift is
    compared with the target directly, so a camera that moves 8 pixels in one frame is learnable
    from a start of "no move"; a confident distribution gives an exact, sharp copy. Returns
    ``(B, C, T, H, W)``."""
    b, c, h, w = frame.shape
    if (p_y.ndim != 3 or p_x.ndim != 3 or p_y.shape[:2] != p_x.shape[:2] or p_y.shape[0] != b
            or p_y.shape[2] % 2 != 1 or p_x.shape[2] % 2 != 1):
        raise ValueError(f"p_y and p_x must both be (B={b}, T, 2R+1), got {tuple(p_y.shape)} and {tuple(p_x.shape)}")
    ry, rx, t = p_y.shape[2] // 2, p_x.shape[2] // 2, p_y.shape[1]
    # one channel per (video, frame, colour); a shift by d reads pixel y - d: a correlation with the
    # flipped distribution over the replicate-padded frame, separable in y and x
    f = F.pad(frame.float(), (rx, rx, ry, ry), mode="replicate")[:, None].expand(b, t, c, h + 2 * ry, w + 2 * rx)
    f = f.reshape(1, b * t * c, h + 2 * ry, w + 2 * rx)
    ky = p_y.float().flip(-1)[:, :, None].expand(b, t, c, 2 * ry + 1).reshape(b * t * c, 1, 2 * ry + 1, 1)
    kx = p_x.float().flip(-1)[:, :, None].expand(b, t, c, 2 * rx + 1).reshape(b * t * c, 1, 1, 2 * rx + 1)
    out = F.conv2d(F.conv2d(f, ky, groups=b * t * c), kx, groups=b * t * c)  # (1, B*T*C, H, W)
    return out.reshape(b, t, c, h, w).transpose(1, 2).to(frame.dtype)


@torch.no_grad()
def best_shifts(frame: torch.Tensor, video: torch.Tensor, radius: int | tuple[int, int]) -> torch.Tensor:
    """The whole-frame integer shift of ``frame`` ``(B, C, H, W)`` (borders repeated, as
    ``shift_frame``) closest in squared error to each frame of ``video`` ``(B, C, T, H, W)``, searched
    over ``-radius .. radius`` on each axis (one radius, or ``(rows, columns)``). Returns ``(B, T, 2)``
    indices into ``0 .. 2 * radius`` (``radius`` is "no move"), rows first: the targets of the shift
    path's distributions."""
    b, c, h, w = frame.shape
    ry, rx = (radius, radius) if isinstance(radius, int) else radius
    t = video.shape[2]
    with torch.autocast(frame.device.type, enabled=False):  # exact float32 costs, whatever the caller's autocast
        f = F.pad(frame.float(), (rx, rx, ry, ry), mode="replicate")  # (B, C, H + 2Ry, W + 2Rx)
        # |cand - x|^2 = |cand|^2 - 2 cand.x (+ |x|^2, the same for every candidate). The candidate moved by
        # (dy, dx) is the padded frame's window at offset (Ry - dy, Rx - dx), so both terms are correlations
        # over every offset at once: with each video's frames as kernels, and with a box of ones.
        kernels = video.float().transpose(1, 2).reshape(b * t, c, h, w)
        cross = F.conv2d(f.reshape(1, b * c, h + 2 * ry, w + 2 * rx), kernels, groups=b).view(b, t, 2 * ry + 1, 2 * rx + 1)
        energy = F.conv2d(f.pow(2).sum(1, keepdim=True), f.new_ones(1, 1, h, w))  # (B, 1, 2Ry + 1, 2Rx + 1)
        cost = (energy - 2 * cross).flip(-2, -1)  # offset order -> shifts -R .. R on each axis
    flat = cost.flatten(2).argmin(dim=2)  # (B, T) over Dy * Dx, rows first
    d = 2 * rx + 1
    return torch.stack([flat // d, flat % d], dim=-1)
