"""How much of a Procgen game's next frames the actions decide, measured from the environment itself.

From states visited by uniform random play (the data's policy), the state is saved and ``futures``
rollouts of ``horizon`` steps are played from it, each with its own uniform random buttons. One
rollout is the "truth"; the mean of the others is the best prediction a model could make *without
the actions* if it knew the exact state (the conditional mean over the action sequences, estimated
from ``futures - 1`` samples, so its error is slightly overstated). Against copying the last frame,
this splits a world model's error into the part the game's own dynamics decide (gravity, momentum,
enemies, the camera following the agent: predictable without actions) and the part the actions
decide. A third prediction, an oracle, says how much of it is the camera: the last frame moved by
the single whole-frame shift (within ``shift_radius`` pixels, borders repeated) that best matches
each true frame. Rollouts in which an episode ends are skipped (the next episode's first frame is
not a prediction).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from avid import tiny
from avid.data.procgen import NUM_ACTIONS, _make_env
from avid.nn import best_shifts, shift_frame


@dataclass
class PredictabilitySpec:
    game: str = "coinrun"
    start_level: int = 5000  # the validation levels of the Coinrun presets
    num_levels: int = 1000
    states: int = 300
    futures: int = 8  # rollouts per state: 1 truth + (futures - 1) for the action-free mean
    horizon: int = 8  # predicted frames, as the models' windows
    every: int = 5  # test every ``every``-th state of the random-play stream
    shift_radius: int = 10  # the oracle's whole-frame shifts: up to this many pixels each way (0: none)
    distribution_mode: str = "hard"
    seed: int = 0


def _psnr(mse: np.ndarray) -> np.ndarray:
    return np.minimum(10 * np.log10(1 / np.maximum(mse, 1e-10)), 100.0)  # capped as the metrics are


def shifted(frame: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``frame`` ``(H, W, C)`` moved ``dy`` pixels down and ``dx`` right, uncovered borders repeated."""
    h, w = frame.shape[:2]
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return frame[rows][:, cols]


def best_shift_mse(last: np.ndarray, truth: np.ndarray, radius: int) -> np.ndarray:
    """Per frame of ``truth`` ``(T, H, W, C)``: the lowest MSE of ``last`` moved by any whole-pixel shift
    within ``radius`` (the search of the shift path's targets, ``avid.nn.best_shifts``)."""
    frame = torch.from_numpy(np.ascontiguousarray(last)).float().permute(2, 0, 1)[None]  # (1, C, H, W)
    video = torch.from_numpy(np.ascontiguousarray(truth)).float().permute(3, 0, 1, 2)[None]  # (1, C, T, H, W)
    best = best_shifts(frame, video, radius)  # (1, T, 2)
    one_hot = torch.nn.functional.one_hot(best, 2 * radius + 1).float()
    moved = shift_frame(frame, one_hot[..., 0, :], one_hot[..., 1, :])
    return (moved - video).pow(2).mean(dim=(1, 3, 4))[0].double().numpy()


def measure(spec: PredictabilitySpec) -> dict:
    """Per predicted frame (1..horizon) and overall: MSE and PSNR (frames in [0, 1], PSNR capped at 100
    dB as in the reports) of copying the last frame and of the action-free mean; the share of the
    copy-last error that remains without the actions."""
    spec = tiny.predictability(spec)  # AVID_TINY=1: smoke-test size
    if spec.futures < 2 or spec.states < 1 or spec.horizon < 1:
        raise ValueError(f"need futures >= 2, states >= 1, horizon >= 1; got {spec.futures}, {spec.states}, "
                         f"{spec.horizon}")
    env = _make_env(spec.game, 1, spec.start_level, spec.num_levels, spec.distribution_mode, spec.seed)
    rng = np.random.default_rng(spec.seed)
    copy, mean, shift, skipped = [], [], [], 0
    while len(copy) < spec.states:
        for _ in range(spec.every):
            env.act(rng.integers(0, NUM_ACTIONS, 1).astype(np.int32))
        state = env.callmethod("get_state")
        last = env.observe()[1]["rgb"][0].astype(np.float32) / 255
        roll = np.empty((spec.futures, spec.horizon, *last.shape), np.float32)
        ended = False
        for k in range(spec.futures):
            env.callmethod("set_state", state)
            for t, a in enumerate(rng.integers(0, NUM_ACTIONS, spec.horizon)):
                env.act(np.array([a], np.int32))
                _, obs, first = env.observe()
                ended |= bool(first[0])
                roll[k, t] = obs["rgb"][0] / 255.0
        env.callmethod("set_state", state)
        if ended:
            skipped += 1
            continue
        truth = roll[0]
        copy.append(((truth - last) ** 2).mean(axis=(1, 2, 3)))
        mean.append(((truth - roll[1:].mean(0)) ** 2).mean(axis=(1, 2, 3)))
        shift.append(best_shift_mse(last, truth, spec.shift_radius))
    copy_mse, mean_mse, shift_mse = np.array(copy), np.array(mean), np.array(shift)  # (states, horizon)
    row = lambda mse: {"mse": float(mse.mean()), "psnr": float(_psnr(mse).mean()),  # noqa: E731
                       "psnr_per_frame": _psnr(mse).mean(0).round(3).tolist()}
    return {"spec": asdict(spec), "skipped_states": skipped, "copy_last": row(copy_mse),
            "action_free_mean": row(mean_mse), "best_shift_oracle": row(shift_mse),
            "share_left_without_actions": float(mean_mse.mean() / max(copy_mse.mean(), 1e-12))}


def markdown(result: dict) -> str:
    s = result["spec"]
    c, m, o = result["copy_last"], result["action_free_mean"], result["best_shift_oracle"]
    per_frame = lambda r: " / ".join(f"{v:.1f}" for v in r["psnr_per_frame"])  # noqa: E731
    return "\n".join([
        f"{s['game']} ({s['distribution_mode']}), levels {s['start_level']}-{s['start_level'] + s['num_levels'] - 1}, "
        f"{s['states']} states of uniform random play, {s['futures']} random-action rollouts of {s['horizon']} "
        f"frames each (seed {s['seed']}; {result['skipped_states']} states skipped: an episode ended)",
        "",
        "| prediction of the next frames | MSE | PSNR (mean over frames) | PSNR at frames 1..horizon |",
        "|---|---|---|---|",
        f"| copy the last frame | {c['mse']:.5f} | {c['psnr']:.2f} | {per_frame(c)} |",
        f"| the last frame moved by the best whole-frame shift (oracle, within {s['shift_radius']} px) | "
        f"{o['mse']:.5f} | {o['psnr']:.2f} | {per_frame(o)} |",
        f"| mean over the other rollouts (exact state, no actions) | {m['mse']:.5f} | {m['psnr']:.2f} | {per_frame(m)} |",
        "",
        f"Without the actions but with the exact state, {100 * result['share_left_without_actions']:.1f}% of "
        "copy-last-frame's squared error remains: the rest is decided by the game's own dynamics.",
    ]) + "\n"
