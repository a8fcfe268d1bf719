"""Action-labelled Procgen episodes (paper section 9.1): uniform random actions over the 15
buttons, 64x64 RGB, one stream per level, and the held-out evaluation trajectories."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from avid import tiny
from avid.data.storage import EpisodeStore, clean_temp, spec_from_meta
from avid.locks import locked

GAMES = ("bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot",
         "heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot")
PRETRAIN_GAMES = tuple(g for g in GAMES if g != "coinrun")
NUM_ACTIONS = 15


@dataclass
class ProcgenSpec:
    """What to generate: a stream of ``steps_per_level`` steps from each level of each game, or,
    with ``trajectories > 0``, that many ``trajectory_len``-frame trajectories from random levels."""

    games: list[str] = field(default_factory=lambda: ["coinrun"])
    start_level: int = 0
    num_levels: int = 100
    steps_per_level: int = 1000
    trajectories: int = 0
    trajectory_len: int = 10
    distribution_mode: str = "hard"
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [g for g in self.games if g not in GAMES]
        if bad:
            raise ValueError(f"unknown Procgen game(s) {bad}; choose from {GAMES}")
        if self.distribution_mode not in ("easy", "hard"):  # other modes abort the process on most games
            raise ValueError(f"distribution_mode must be 'easy' or 'hard', got {self.distribution_mode!r}")
        if self.num_levels < 1 or self.start_level < 0:
            raise ValueError(f"the level range must hold at least one level from 0 up, got start {self.start_level}, "
                             f"{self.num_levels} level(s) (--levels START:STOP with STOP > START >= 0)")
        if self.trajectories < 0 or self.trajectory_len < 2:
            raise ValueError(f"need trajectories >= 0 (0: streams) and trajectory_len >= 2, got {self.trajectories}, "
                             f"{self.trajectory_len}")
        if not self.trajectories and self.steps_per_level < 1:
            raise ValueError(f"--steps-per-level must be at least 1, got {self.steps_per_level}")

    def meta(self) -> dict:
        return {"source": "procgen", "action_kind": "discrete", "num_actions": NUM_ACTIONS,
                "frame_size": 64, **self.__dict__}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "ProcgenSpec":
        """The spec that made a dataset, from its ``index.json`` metadata (for regeneration)."""
        return spec_from_meta(cls, meta)


# Named datasets. Paper sizes, plus the small CPU versions the quickstart and tests use.
PRESETS: dict[str, ProcgenSpec] = {
    "procgen15": ProcgenSpec(list(PRETRAIN_GAMES), 0, 2000, 1000),
    "procgen15-cpu": ProcgenSpec(list(PRETRAIN_GAMES), 0, 24, 500),
    "coinrun100k": ProcgenSpec(["coinrun"], 0, 100, 1000),
    "coinrun500k": ProcgenSpec(["coinrun"], 0, 500, 1000),
    "coinrun2.5m": ProcgenSpec(["coinrun"], 0, 2500, 1000),
    "coinrun-eval": ProcgenSpec(["coinrun"], 10000, 1000, trajectories=1024, seed=1),
    "coinrun-classifier": ProcgenSpec(["coinrun"], 20000, 10000, 1000, seed=2),
    "coinrun-classifier-cpu": ProcgenSpec(["coinrun"], 20000, 400, 500, seed=2),
    "coinrun-classifier-test": ProcgenSpec(["coinrun"], 30000, 1000, trajectories=2048, seed=3),
    # Validation splits: choices (learning rate, weighting, steps, sweep values) are made on these,
    # never on the test levels. coinrun-val is disjoint from every Coinrun preset above;
    # procgen15-val (as the shipped base model's held-out set, seed 5) and procgen15-test are
    # disjoint from procgen15-cpu's training levels 0-23 (the paper-scale procgen15 trains on
    # levels 0-1999, which include procgen15-val's).
    "coinrun-val": ProcgenSpec(["coinrun"], 5000, 1000, trajectories=256, seed=4),
    # The action classifier's own validation levels (its design, learning rate and steps are chosen
    # on these), disjoint from coinrun-classifier(-cpu) and coinrun-classifier-test.
    "coinrun-classifier-val": ProcgenSpec(["coinrun"], 40000, 200, trajectories=1024, seed=7),
    "procgen15-val": ProcgenSpec(list(PRETRAIN_GAMES), 1000, 1000, trajectories=16, seed=5),
    "procgen15-test": ProcgenSpec(list(PRETRAIN_GAMES), 3000, 1000, trajectories=16, seed=6),
}


def level_range(meta: dict) -> tuple[tuple[str, ...], range] | None:
    """The games and levels a dataset was drawn from, read from its index metadata (``spec.meta()``);
    None when the data does not record them (not generated from Procgen)."""
    if meta.get("source") != "procgen" or "start_level" not in meta:
        return None
    return tuple(meta["games"]), range(meta["start_level"], meta["start_level"] + meta["num_levels"])


def describe_levels(meta: dict) -> str:
    """E.g. ``coinrun levels 5000-5999``, or what the data is when it records no levels."""
    found = level_range(meta)
    if found is None:
        return f"{meta.get('source', 'unknown')} data (no level range recorded)"
    games, levels = found
    names = games[0] if len(games) == 1 else f"{len(games)} games ({', '.join(games)})"
    return f"{names} levels {levels.start}-{levels.stop - 1}"


def shared_levels(a: dict, b: dict) -> str | None:
    """The levels two datasets have in common (e.g. ``coinrun levels 5000-5099``), None when they
    are disjoint or either records no levels."""
    ra, rb = level_range(a), level_range(b)
    if ra is None or rb is None:
        return None
    games = sorted(set(ra[0]) & set(rb[0]))
    lo, hi = max(ra[1].start, rb[1].start), min(ra[1].stop, rb[1].stop)
    return f"{', '.join(games)} levels {lo}-{hi - 1}" if games and lo < hi else None


def _make_env(game: str, num: int, start_level: int, num_levels: int, mode: str, seed: int):
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        from procgen import ProcgenGym3Env
    return ProcgenGym3Env(num=num, env_name=game, start_level=start_level, num_levels=num_levels,
                          distribution_mode=mode, rand_seed=seed)


def rollout_level(game: str, level: int, steps: int, mode: str = "hard", seed: int = 0):
    """One stream of ``steps`` frames on a single level with uniform random actions."""
    env = _make_env(game, 1, level, 1, mode, seed)
    rng = np.random.default_rng(seed)
    frames = np.empty((steps, 64, 64, 3), np.uint8)
    firsts = np.empty(steps, bool)
    actions = rng.integers(0, NUM_ACTIONS, size=steps)
    for j in range(steps):
        _, obs, first = env.observe()
        frames[j], firsts[j] = obs["rgb"][0], first[0]
        env.act(actions[j:j + 1].astype(np.int32))
    return frames, actions.astype(np.int64), firsts


NOOP = 4  # Procgen's button combination with no key pressed


def play_level(game: str, level: int, actions: np.ndarray, mode: str = "hard", seed: int = 0):
    """Play ``actions`` ``(L,)`` on exactly one level from its start, recording what the game gives.

    Returns frames ``(L + 1, 64, 64, 3)`` uint8 (frame 0 before any action; frame ``j + 1`` after
    action ``j``), rewards ``(L,)`` float32 (reward of action ``j``) and ends ``(L,)`` bool (action
    ``j`` ended the episode: frame ``j + 1`` then starts a new one, as Procgen resets on its own and
    never shows an episode's last frame)."""
    actions = np.asarray(actions, np.int32).reshape(-1)
    env = _make_env(game, 1, level, 1, mode, seed)
    frames = np.empty((len(actions) + 1, 64, 64, 3), np.uint8)
    rewards, ends = np.zeros(len(actions), np.float32), np.zeros(len(actions), bool)
    frames[0] = env.observe()[1]["rgb"][0]
    for j, a in enumerate(actions):
        env.act(np.array([a], np.int32))
        rew, obs, first = env.observe()
        frames[j + 1], rewards[j], ends[j] = obs["rgb"][0], rew[0], first[0]
    return frames, rewards, ends


def _random_play(env, rng: np.random.Generator, num_envs: int, frames: int, steps: int, timeout: int):
    """Uniform random play of ``env``'s ``num_envs`` games for ``steps`` steps. After each action
    yields ``(window, actions, reward, first, event, length)``: ``window`` ``(N, frames, 64, 64, 3)``,
    the frames up to and including the one the action was taken on (the episode's first frame
    repeated before it); ``actions`` ``(N, frames)``, the actions taken on them (no-ops before the
    episode; the last is this step's); what the game gave (``reward``, ``first``: a new episode
    began); ``event``: a reward, or an end before ``timeout`` steps (a cut at the time limit is no
    ending); ``length``: the episode's frames up to the acted one. Yielded arrays are only valid
    until the next step."""
    window = np.repeat(env.observe()[1]["rgb"][:, None], frames, axis=1)
    actions = np.full((num_envs, frames), NOOP, np.int64)
    length = np.zeros(num_envs, np.int64)
    for _ in range(steps):
        acts = rng.integers(0, NUM_ACTIONS, num_envs)
        actions = np.concatenate([actions[:, 1:], acts[:, None]], axis=1)
        env.act(acts.astype(np.int32))
        rew, obs, first = env.observe()
        length += 1
        yield window, actions, rew, first, (first & (length < timeout)) | (rew > 0), length
        window = np.concatenate([window[:, 1:], obs["rgb"][:, None]], axis=1)
        window[first] = np.repeat(obs["rgb"][first][:, None], frames, axis=1)
        actions[first] = NOOP
        length[first] = 0


def collect_outcomes(game: str, start_level: int, num_levels: int, steps: int, cond_frames: int = 2,
                     keep_negatives: float = 0.02, num_envs: int = 64, timeout: int = 1000, seed: int = 0,
                     progress: bool = True, history: int = 0) -> dict[str, np.ndarray]:
    """What each random action led to, for reward and termination models: ``steps`` steps of
    ``num_envs`` games. Every step that ended an episode or gave a reward is kept; other steps are
    kept with probability ``keep_negatives`` and weighted by its inverse, so weighted counts are
    the game's own rates. Episodes cut at ``timeout`` steps are truncated, not ended: those steps
    are left out.

    Returns ``context`` ``(M, k, 64, 64, 3)`` uint8 (the last ``k`` frames before the action, the
    episode's first frame repeated at its start), ``actions`` ``(M,)``, ``reward`` ``(M,)``,
    ``end`` ``(M,)`` bool and ``weight`` ``(M,)``; with ``history`` H > 0 also ``before`` ``(M, H, 64,
    64, 3)``, the H frames before the context, and ``actions_before`` ``(M, H)``, the actions taken on
    the H frames before the step's own (padded likewise, with no-ops), for imagining the context."""
    env = _make_env(game, num_envs, start_level, num_levels, "hard", seed)
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in ("context", "actions", "reward", "end", "weight")}
    if history:
        out.update(before=[], actions_before=[])
    play = _random_play(env, rng, num_envs, cond_frames + history, steps, timeout)
    for window, actions, rew, first, event, _ in tqdm(play, total=steps, desc=f"{game} outcomes", disable=not progress):
        keep = event | (~first & (rng.random(num_envs) < keep_negatives))
        for e in np.flatnonzero(keep):
            out["context"].append(window[e, history:].copy())
            out["actions"].append(actions[e, -1])
            out["reward"].append(rew[e])
            out["end"].append(bool(event[e]) and bool(first[e]))
            out["weight"].append(1.0 if event[e] else 1.0 / keep_negatives)
            if history:
                out["before"].append(window[e, :history].copy())
                out["actions_before"].append(actions[e, -history - 1:-1].copy())
    result = {"context": np.stack(out["context"]), "actions": np.asarray(out["actions"], np.int64),
              "reward": np.asarray(out["reward"], np.float32), "end": np.asarray(out["end"], bool),
              "weight": np.asarray(out["weight"], np.float32)}
    if history:
        result.update(before=np.stack(out["before"]), actions_before=np.stack(out["actions_before"]))
    return result


def event_windows(game: str, start_level: int, num_levels: int, events: int, frames: int, negatives: int,
                  keep_negatives: float = 0.01, num_envs: int = 64, timeout: int = 1000, max_steps: int = 20000,
                  seed: int = 0, progress: bool = True) -> dict[str, np.ndarray]:
    """Real random play leading up to events, for checking reward and termination models on what a
    world model imagines before them: the first ``events`` steps that gave a reward or ended an
    episode (not by ``timeout``), and ``negatives`` steps that did neither (each kept with probability
    ``keep_negatives``, which spreads them over the play), each with the ``frames`` frames of its episode up to
    and including the frame the action was taken on, and the ``frames - 1`` actions before it and its own.
    Steps with fewer than ``frames`` frames of their episode behind them are left out.

    Returns ``frames`` ``(M, frames, 64, 64, 3)`` uint8, ``actions`` ``(M, frames)`` (the last is the
    step's own), ``reward`` ``(M,)``, ``end`` ``(M,)`` bool, and ``event_rate`` (events per step of play,
    eligible steps only)."""
    env = _make_env(game, num_envs, start_level, num_levels, "hard", seed)
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in ("frames", "actions", "reward", "end")}
    found, seen, eligible = [0, 0], 0, 0
    bar = tqdm(total=events, desc=f"{game} events", disable=not progress)
    for window, actions, rew, first, event, length in _random_play(env, rng, num_envs, frames, max_steps, timeout):
        ok = length >= frames  # the whole window inside the episode
        eligible, seen = eligible + int(ok.sum()), seen + int((ok & event).sum())
        for e in np.flatnonzero(ok):
            kind = 0 if event[e] else 1
            want = (events, negatives)[kind]
            if found[kind] >= want or (kind == 1 and rng.random() >= keep_negatives):
                continue
            found[kind] += 1
            bar.update(kind == 0)
            out["frames"].append(window[e].copy())
            out["actions"].append(actions[e].copy())
            out["reward"].append(float(rew[e]))
            out["end"].append(bool(first[e] and event[e]))
        if found[0] >= events and found[1] >= negatives:
            break
    bar.close()
    if found[0] < events or found[1] < negatives:
        raise RuntimeError(f"found {found[0]} events and {found[1]} other steps of {events} and {negatives} in "
                           f"{max_steps} steps of {num_envs} games; ask for fewer, or shorter windows")
    return {"frames": np.stack(out["frames"]), "actions": np.stack(out["actions"]),
            "reward": np.asarray(out["reward"], np.float32), "end": np.asarray(out["end"], bool),
            "event_rate": np.float64(seen / max(eligible, 1))}


def random_trajectories(game: str, n: int, length: int, start_level: int, num_levels: int,
                        mode: str = "hard", seed: int = 0, num_envs: int = 64, progress: bool = True):
    """``n`` trajectories of ``length`` frames from levels drawn uniformly in the range, each after
    a random burn-in of random actions, never crossing an episode boundary."""
    env = _make_env(game, num_envs, start_level, num_levels, mode, seed)
    rng = np.random.default_rng(seed)
    wait = rng.integers(0, 4 * length, size=num_envs)  # steps to skip before the next trajectory
    cur: list[list] = [[] for _ in range(num_envs)]
    out_f, out_a = [], []
    bar = tqdm(total=n, desc=f"{game} trajectories", disable=not progress)
    while len(out_f) < n:
        _, obs, first = env.observe()
        acts = rng.integers(0, NUM_ACTIONS, size=num_envs)
        for e in range(num_envs):
            if first[e]:
                cur[e] = []
            if wait[e] > 0:
                wait[e] -= 1
                continue
            cur[e].append((obs["rgb"][e].copy(), acts[e]))
            if len(cur[e]) == length and len(out_f) < n:
                out_f.append(np.stack([f for f, _ in cur[e]]))
                out_a.append(np.array([a for _, a in cur[e]], np.int64))
                cur[e], wait[e] = [], rng.integers(0, 4 * length)
                bar.update(1)
        env.act(acts.astype(np.int32))
    bar.close()
    frames = np.concatenate(out_f)
    firsts = np.zeros(len(frames), bool)
    firsts[::length] = True
    return frames, np.concatenate(out_a), firsts


@locked(lambda a: a["out"])
def generate(spec: ProcgenSpec, out: str, progress: bool = True) -> EpisodeStore:
    """Write ``spec``'s data to ``out`` (resumes: shards in the index and intact on disk are skipped;
    missing, truncated or garbled ones are regenerated). One writer at a time (``avid.locks``)."""
    spec = tiny.procgen(spec)  # AVID_TINY=1: smoke-test size
    store = EpisodeStore(out, meta=spec.meta())
    clean_temp(store.root)
    if spec.trajectories:
        for game in spec.games:
            if not store.has(game):
                f, a, s = random_trajectories(game, spec.trajectories, spec.trajectory_len, spec.start_level,
                                              spec.num_levels, spec.distribution_mode, spec.seed, progress=progress)
                store.write_shard(game, f, a, s, game=game, trajectories=spec.trajectories)
        return store
    jobs = [(g, lvl) for g in spec.games for lvl in range(spec.start_level, spec.start_level + spec.num_levels)]
    todo = [(g, lvl) for g, lvl in jobs if not store.has(f"{g}_{lvl:06d}")]
    for g, lvl in tqdm(todo, desc=f"procgen -> {out}", disable=not progress, initial=len(jobs) - len(todo),
                       total=len(jobs)):
        f, a, s = rollout_level(g, lvl, spec.steps_per_level, spec.distribution_mode, spec.seed * 1_000_003 + lvl)
        store.write_shard(f"{g}_{lvl:06d}", f, a, s, game=g, level=lvl)
    return store
