"""``avid outcome check``: does a world model's imagination still show the events that the reward
and termination model reads? An agent trained inside a world model learns only from the rewards and
ends the outcome model finds in imagined frames, so this is the first thing to know before RL.

Real random play on held-out levels (``avid.data.procgen.event_windows``) gives steps that gave the
coin or ended an episode, and steps that did neither, each with the frames and actions before it.
For a horizon ``h``, a model starts ``h - 1`` steps before the step from the real frames there,
imagines the frames up to it under the real actions (``avid.rollout.rollout_long``: one frame per
call as ``WorldModelEnv`` does, or chunks), and the outcome model reads the imagined frames with the
step's action. ``h = 1`` is the outcome model on real frames (its own held-out recall); copy-last
(the start frames, nothing moves) is the trivial imagination. Reported per source and horizon:
recall of rewards and ends (95% Wilson intervals), how often each fires on steps with no event, and
the precision that implies at the game's own event rate.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avid.config import SampleConfig
from avid.data import to_uint8, to_video
from avid.data.procgen import event_windows
from avid.data.storage import atomic_write_text
from avid.envs.outcome import OutcomeModel
from avid.methods import Method
from avid.rollout import rollout_long

COPY_LAST = "copy last frame"
REAL = "real frames"


@dataclass
class EventCheckSpec:
    game: str = "coinrun"
    start_level: int = 52000  # the outcome model's own test levels (avid outcome train's test_split)
    num_levels: int = 500
    events: int = 256  # steps that gave the coin or ended an episode
    negatives: int = 512  # steps that did neither
    horizons: tuple[int, ...] = (1, 2, 4, 8)
    chunk: int = 1  # frames per model call (1: as WorldModelEnv steps; the model's window: its chunk mode)
    seed: int = 0


def wilson(hits: int, n: int) -> list[float]:
    """95% Wilson score interval of a proportion (``[nan, nan]`` for ``n = 0``)."""
    if n == 0:
        return [float("nan")] * 2
    z, p = 1.96, hits / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def contexts_before(windows: dict[str, np.ndarray], h: int, k: int, model: Method | None, cfg: SampleConfig,
                    chunk: int) -> np.ndarray:
    """The ``k`` frames the outcome model reads at each window's last step, ``(M, k, H, W, 3)`` uint8,
    when the last ``h - 1`` of them (and those before, to ``k``) are imagined: by ``model`` from the
    real frames ``h - 1`` steps earlier under the real actions, or, with ``model`` None, by copying
    the last of those frames (nothing moves). ``k`` must be at least the model's conditioning frames."""
    frames, actions = windows["frames"], windows["actions"]
    n = frames.shape[1]  # frame n - 1 is the step's own; action j was taken on frame j
    if n < h + k - 1:
        raise ValueError(f"horizon {h} needs {h + k - 1} frames before each step, the windows hold {n}")
    start = frames[:, n - h - k + 1:n - h + 1]  # the k real frames up to the one h - 1 steps before
    if h == 1:
        return start
    if model is None:
        made = np.repeat(start[:, -1:], h - 1, axis=1)
    else:
        first = start[:, k - model.ctx.cond_frames:]  # the model's own conditioning frames
        video = rollout_long(model, to_video(torch.as_tensor(first)), torch.as_tensor(actions[:, n - h:n - 1]), cfg,
                             chunk=chunk)
        made = to_uint8(video).numpy()
    return np.concatenate([start, made], axis=1)[:, -k:]


def _scores(fired: np.ndarray, windows: dict[str, np.ndarray], rates: dict[str, float]) -> dict[str, Any]:
    """Recall at the real events of each head, its firing on steps with no event, and the precision
    that implies at the game's own rate of the event."""
    truth = {"reward": windows["reward"] > 0, "end": windows["end"]}
    none = ~(truth["reward"] | truth["end"])
    out = {}
    for h, head in enumerate(("reward", "end")):
        pos, hits = int(truth[head].sum()), int(fired[truth[head], h].sum())
        false = int(fired[none, h].sum())
        recall, false_rate = hits / max(pos, 1), false / max(int(none.sum()), 1)
        found, wrong = recall * rates[head], false_rate * (1 - rates[head])
        out[head] = {"recall": recall, "recall_ci95": wilson(hits, pos), "events": pos,
                     "false_rate": false_rate, "false_rate_ci95": wilson(false, int(none.sum())),
                     "precision_at_game_rate": found / (found + wrong) if found + wrong > 0 else float("nan")}
    return out


def check_events(models: dict[str, Method], outcome: OutcomeModel, spec: EventCheckSpec, out: str | Path,
                 cfg: SampleConfig, progress: bool = True) -> dict[str, Any]:
    """Score ``outcome`` on frames each of ``models`` imagines before real events (module doc); writes
    ``events.json`` and ``events.md`` to ``out`` and returns the results."""
    k = outcome.cfg.cond_frames
    for name, m in models.items():
        if m.ctx.action_kind != "discrete" or m.ctx.frame_size not in (None, outcome.cfg.frame_size):
            raise ValueError(f"{name} makes {m.ctx.frame_size} px frames from {m.ctx.action_kind} actions; the "
                             f"outcome model reads {outcome.cfg.frame_size} px frames of a game's discrete actions")
    if min(spec.horizons) < 1:
        raise ValueError(f"horizons must be at least 1 (1: real frames), got {spec.horizons}")
    # enough real frames before each step for the longest horizon and for every model's conditioning
    k_max = max([k] + [m.ctx.cond_frames for m in models.values()])
    t0 = time.time()
    windows = event_windows(spec.game, spec.start_level, spec.num_levels, spec.events, k_max + max(spec.horizons) - 1,
                            spec.negatives, seed=spec.seed, progress=progress)
    coin_share = float((windows["reward"][windows["end"]] > 0).mean()) if windows["end"].any() else 0.0
    rates = {"end": float(windows["event_rate"]), "reward": float(windows["event_rate"]) * coin_share}
    results: dict[str, dict[int, Any]] = {}
    sources: dict[str, Method | None] = {COPY_LAST: None, **models}
    for h in spec.horizons:
        for name, model in ([(REAL, None)] if h == 1 else sources.items()):
            ctx = contexts_before(windows, h, k_max, model, cfg, spec.chunk)[:, -k:]
            p = outcome.probabilities(ctx, windows["actions"][:, -1])
            fired = p >= np.asarray(outcome.cfg.thresholds)
            results.setdefault(name, {})[h] = _scores(fired, windows, rates)
            if progress:
                print(f"{name}, {h - 1} imagined frames: reward recall {results[name][h]['reward']['recall']:.3f}, "
                      f"end recall {results[name][h]['end']['recall']:.3f}", flush=True)
    report = {"spec": asdict(spec), "sampler": cfg.describe(), "event_rate_per_step": rates,
              "steps": {"events": int(((windows["reward"] > 0) | windows["end"]).sum()),
                        "coin": int((windows["reward"] > 0).sum()), "ends": int(windows["end"].sum()),
                        "no_event": int((~windows["end"] & ~(windows["reward"] > 0)).sum())},
              "thresholds": list(outcome.cfg.thresholds), "wall_seconds": round(time.time() - t0, 1),
              "results": {name: {str(h): v for h, v in r.items()} for name, r in results.items()}}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "events.json", json.dumps(report, indent=1))
    atomic_write_text(out / "events.md", events_table(report))
    return report


def events_table(report: dict[str, Any]) -> str:
    """The check's markdown: a row per source and horizon."""
    def pct(v, ci):
        return f"{100 * v:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"

    s, steps = report["spec"], report["steps"]
    lines = ["| frames read by the outcome model | imagined steps before the event | reward recall [95%] | "
             "end recall [95%] | reward fires on no-event steps | end fires on no-event steps | reward precision "
             "at the game's rate |", "|---|---|---|---|---|---|---|"]
    for name, per in report["results"].items():
        for h, r in per.items():
            rw, en = r["reward"], r["end"]
            prec = rw["precision_at_game_rate"]
            lines.append(f"| {name} | {int(h) - 1} | {pct(rw['recall'], rw['recall_ci95'])} | "
                         f"{pct(en['recall'], en['recall_ci95'])} | {100 * rw['false_rate']:.2f}% | "
                         f"{100 * en['false_rate']:.2f}% | {'n/a' if prec != prec else f'{prec:.3f}'} |")
    lines += ["", f"Real random play on {s['game']} levels {s['start_level']}–{s['start_level'] + s['num_levels'] - 1}: "
              f"{steps['coin']} coin steps, {steps['ends']} episode ends (the coin's included), {steps['no_event']} "
              f"steps with no event; events per step of play: {report['event_rate_per_step']['end']:.2e} "
              f"(the coin: {report['event_rate_per_step']['reward']:.2e}). Imagination: {report['sampler']}, "
              f"{s['chunk']} frame(s) per call, under the real actions. The outcome model's thresholds: "
              f"{report['thresholds']}."]
    return "\n".join(lines) + "\n"


__all__ = ["EventCheckSpec", "check_events", "contexts_before", "events_table", "wilson"]
