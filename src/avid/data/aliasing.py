"""Action aliasing in a Procgen game, measured from the environment itself: which of the 15 buttons
give identical frames from the same state, and the accuracy ceiling that puts on any classifier.

From states visited by uniform random play (the data's policy), the environment's state is saved
(``env.callmethod("get_state")``), every button is tried from it (``set_state``, ``act``), then the
same ``horizon - 1`` random follow-up buttons are pressed in every branch; two buttons are
*indistinguishable in that state* when all ``horizon`` frames agree exactly. Per state this
partitions the 15 buttons into groups; over all states:

- the **equivalence classes**: buttons indistinguishable in every sampled state;
- the **ceiling over buttons**: the best accuracy any classifier of the pressed button can reach
  from the frames. In a state with groups g, a uniform random button is named at best with
  probability sum_g (|g| / 15) * (1 / |g|) = (#groups) / 15; averaged over states;
- the **ceiling over classes**: the same for naming the button's class, sum_g max_c |g ∩ c| / 15
  per state (a group that mixes classes — e.g. "left" against a wall looks like "no-op" — still
  loses some);
- chance levels: 1/15 over buttons, and the largest class's share over classes.

``horizon=1`` compares the next frame only; larger horizons count effects that show later
(velocity), up to what the classifier's window can see.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from avid.data.procgen import NUM_ACTIONS

# Procgen's 15 buttons (procgen/env.py: get_combos)
BUTTONS = ("left+down", "left", "left+up", "down", "none", "up", "right+down", "right", "right+up",
           "D", "A", "W", "S", "Q", "E")


@dataclass
class AliasingSpec:
    game: str = "coinrun"
    start_level: int = 50000  # levels no dataset preset uses
    num_levels: int = 500
    states: int = 5000  # states tested
    every: int = 3  # test every ``every``-th state of the random-play stream
    horizon: int = 1  # frames compared after the button (the next one, then follow-ups)
    tolerance: float = 0.0  # classes: buttons alike in all but this fraction of states
    distribution_mode: str = "hard"
    seed: int = 0


@dataclass
class AliasingReport:
    spec: AliasingSpec
    classes: list[list[int]]  # the equivalence classes, as lists of buttons
    class_of: list[int]  # button -> index in ``classes``
    ceiling_buttons: float
    ceiling_classes: float
    chance_buttons: float
    chance_classes: float
    mean_groups: float  # distinguishable groups per state, on average
    same_fraction: list[list[float]]  # [a][b]: fraction of states where a and b look the same

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        s = self.spec
        names = [" / ".join(BUTTONS[b] for b in c) for c in self.classes]
        alike = "in every state" if s.tolerance == 0 else f"in at least {1 - s.tolerance:.1%} of the states"
        lines = [f"### Action aliasing in {s.game} ({s.states} states of random play, levels "
                 f"{s.start_level}-{s.start_level + s.num_levels - 1}, {s.distribution_mode}, horizon {s.horizon} "
                 f"frame(s))", "", f"Classes: buttons whose frames are identical {alike}.", "",
                 "| class | buttons |", "|---|---|"]
        lines += [f"| {k} | {n} ({', '.join(map(str, c))}) |" for k, (n, c) in enumerate(zip(names, self.classes))]
        lines += ["", "| | chance | ceiling (perfect classifier) |", "|---|---|---|",
                  f"| over the {NUM_ACTIONS} buttons | {self.chance_buttons:.4f} | {self.ceiling_buttons:.4f} |",
                  f"| over the {len(self.classes)} classes | {self.chance_classes:.4f} | {self.ceiling_classes:.4f} |",
                  "", f"Distinguishable groups per state: {self.mean_groups:.2f} of {NUM_ACTIONS} on average."]
        return "\n".join(lines) + "\n"


def _groups(outcomes: list[bytes]) -> list[int]:
    """Button -> group id, buttons with equal outcomes sharing one."""
    ids: dict[bytes, int] = {}
    return [ids.setdefault(o, len(ids)) for o in outcomes]


def partitions(spec: AliasingSpec) -> np.ndarray:
    """``(states, 15)`` group ids: per tested state, which buttons give the same ``horizon`` frames."""
    from procgen import ProcgenGym3Env

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        env = ProcgenGym3Env(num=1, env_name=spec.game, start_level=spec.start_level, num_levels=spec.num_levels,
                             distribution_mode=spec.distribution_mode, rand_seed=spec.seed)
    rng = np.random.default_rng(spec.seed)
    out = np.zeros((spec.states, NUM_ACTIONS), np.int64)
    for k in range(spec.states * spec.every):
        if k % spec.every == 0:
            state = env.callmethod("get_state")
            follow = rng.integers(0, NUM_ACTIONS, max(spec.horizon - 1, 0))
            outcomes = []
            for button in range(NUM_ACTIONS):
                env.callmethod("set_state", state)
                frames = []
                for a in (button, *follow):
                    env.act(np.array([a], np.int32))
                    frames.append(env.observe()[1]["rgb"][0].tobytes())
                outcomes.append(b"".join(frames))
            out[k // spec.every] = _groups(outcomes)
            env.callmethod("set_state", state)
        env.act(rng.integers(0, NUM_ACTIONS, 1).astype(np.int32))
    return out


def summarise(spec: AliasingSpec, groups: np.ndarray, tolerance: float = 0.0) -> AliasingReport:
    """Equivalence classes and ceilings from per-state group ids ``(states, 15)``. Two buttons share a
    class when they look the same in every state (``tolerance=0``), or in all but that fraction of
    states (then classes are the connected components of that relation)."""
    same = groups[:, :, None] == groups[:, None, :]  # (S, 15, 15)
    alike = same.mean(0) >= 1 - tolerance
    class_of, classes = [-1] * NUM_ACTIONS, []
    for a in range(NUM_ACTIONS):
        if class_of[a] < 0:
            members, todo = set(), [a]
            while todo:
                b = todo.pop()
                if b not in members:
                    members.add(b)
                    todo += [c for c in range(NUM_ACTIONS) if alike[b, c]]
            for b in members:
                class_of[b] = len(classes)
            classes.append(sorted(members))
    n_groups = np.array([len(set(g)) for g in groups.tolist()])
    cls = np.array(class_of)
    by_class = []
    for g in groups:
        best = sum(np.bincount(cls[g == gid], minlength=len(classes)).max() for gid in np.unique(g))
        by_class.append(best / NUM_ACTIONS)
    return AliasingReport(spec, classes, class_of, float(n_groups.mean() / NUM_ACTIONS), float(np.mean(by_class)),
                          1 / NUM_ACTIONS, max(len(c) for c in classes) / NUM_ACTIONS, float(n_groups.mean()),
                          same.mean(0).round(4).tolist())


def measure(spec: AliasingSpec) -> AliasingReport:
    return summarise(spec, partitions(spec), spec.tolerance)


def save(report: AliasingReport, path: str | Path) -> Path:
    """``path`` (JSON, the classes under ``class_of``) and the Markdown table beside it (``.md``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    path.with_suffix(".md").write_text(report.markdown())
    return path


def load_classes(path: str | Path) -> list[int]:
    """Button -> class index from a saved report; a clear error if the file is not one."""
    try:
        class_of = json.loads(Path(path).read_text())["class_of"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not an action-aliasing report (`avid classifier aliasing`): {err}") from None
    if len(class_of) != NUM_ACTIONS or sorted(set(class_of)) != list(range(max(class_of) + 1)):
        raise ValueError(f"{path}: class_of must give a class 0..k-1 for each of {NUM_ACTIONS} buttons")
    return class_of
