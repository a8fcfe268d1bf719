"""The robot domain at CPU scale (the paper's RT-1 stand-in, section 9.1): episodes of a simulated
arm (``avid.data.robot_sim``) doing scripted, noisy tasks (``avid.data.robot_policies``), 64x64 RGB,
RT-1-style 7-D continuous actions stored normalised to [-1, 1] (the scale is in the metadata).

The split mirrors the paper's: the base model is pretrained on action-free videos of reach, push
and pick in four scenes; the adapters learn the held-out target task (place an object in the tray)
from action-labelled episodes; validation and test sets are 16-frame trajectories drawn at a random
point of held-out episodes (the paper's 1024 test trajectories of 16 steps).

Episode ``i`` of a dataset depends only on ``(seed, i)``, so a resumed or repaired dataset is
identical to an uninterrupted one, and the CPU presets are the first episodes of the full ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from avid import tiny
from avid.data.robot_policies import TASKS, Style
from avid.data.robot_sim import ACTION_NAMES, ACTION_SCALE, SCENES, ArmSim
from avid.data.storage import EpisodeStore, clean_temp, spec_from_meta
from avid.locks import locked

PRETRAIN_TASKS = ("reach", "push", "pick")
TARGET_TASKS = ("place",)


@dataclass
class RobotSpec:
    """What to generate: ``episodes`` episodes of ``episode_len`` frames, each a task and a scene
    drawn uniformly from ``tasks`` and ``scenes``; or, with ``trajectories > 0``, that many
    ``trajectory_len``-frame trajectories, each from its own episode at a random start.
    ``actions=False`` stores no action labels (videos for pretraining the base model)."""

    tasks: list[str] = field(default_factory=lambda: list(TARGET_TASKS))
    scenes: list[str] = field(default_factory=lambda: list(SCENES))
    episodes: int = 100
    episode_len: int = 64  # long enough for a scripted pick-and-place (9 of 10 end in the tray)
    trajectories: int = 0
    trajectory_len: int = 16
    actions: bool = True
    frame_size: int = 64
    substeps: int = 8
    episodes_per_shard: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        self.tasks, self.scenes = list(self.tasks), list(self.scenes)
        for kind, names, known in (("task", self.tasks, TASKS), ("scene", self.scenes, SCENES)):
            bad = [n for n in names if n not in known]
            if bad or not names:
                raise ValueError(f"unknown or no robot {kind}(s) {bad or names}; choose from {sorted(known)}")
        if self.trajectories < 0 or self.trajectory_len < 2 or self.episode_len < 2 or (
                self.trajectories and self.episode_len < self.trajectory_len):
            raise ValueError(f"need trajectories >= 0 (0: episodes), episode_len >= 2 and, for trajectories, "
                             f"2 <= trajectory_len <= episode_len; got {self.trajectories}, {self.trajectory_len}, "
                             f"{self.episode_len}")
        if min(self.episodes, self.episodes_per_shard, self.substeps) < 1 or self.frame_size < 8:
            raise ValueError(f"need episodes, episodes_per_shard and substeps >= 1 and frame_size >= 8, got "
                             f"{self.episodes}, {self.episodes_per_shard}, {self.substeps}, {self.frame_size}")

    @property
    def count(self) -> int:
        """Episodes to run: one per trajectory, or ``episodes``."""
        return self.trajectories or self.episodes

    def meta(self) -> dict:
        space = ({"action_kind": "continuous", "num_actions": len(ACTION_NAMES), "action_names": list(ACTION_NAMES),
                  "action_range": [-1.0, 1.0], "action_scale": ACTION_SCALE.tolist()} if self.actions
                 else {"action_kind": "none", "num_actions": 0})
        return {"source": "robot", **space, **self.__dict__}

    @classmethod
    def from_meta(cls, meta: dict) -> "RobotSpec":
        return spec_from_meta(cls, meta)


# Named datasets: paper-shaped sizes and the CPU versions (their first episodes or trajectories).
# Seeds keep every split's episodes apart. The CPU sizes are what the shipped robot models were made
# from on one shared CPU thread (about 25 frames/s: 192 x 64 frames ~8 min, 96 x 64 ~4 min).
PRESETS: dict[str, RobotSpec] = {
    "robot-pretrain": RobotSpec(list(PRETRAIN_TASKS), episodes=10000, actions=False, seed=10),
    "robot-pretrain-cpu": RobotSpec(list(PRETRAIN_TASKS), episodes=192, actions=False, seed=10),
    "robot-pretrain-val": RobotSpec(list(PRETRAIN_TASKS), trajectories=64, actions=False, seed=11),
    "robot-target": RobotSpec(list(TARGET_TASKS), episodes=2000, seed=20),
    "robot-target-cpu": RobotSpec(list(TARGET_TASKS), episodes=96, seed=20),
    "robot-target-val": RobotSpec(list(TARGET_TASKS), trajectories=256, seed=21),
    "robot-target-val-cpu": RobotSpec(list(TARGET_TASKS), trajectories=64, seed=21),
    "robot-target-test": RobotSpec(list(TARGET_TASKS), trajectories=1024, seed=22),
    "robot-target-test-cpu": RobotSpec(list(TARGET_TASKS), trajectories=128, seed=22),
}


@dataclass
class Episode:
    """One recorded episode: ``frames`` ``(N, H, W, 3)`` uint8, ``actions`` ``(N, 7)`` float32 as
    applied (``actions[j]`` taken after ``frames[j]``), what it was, and the end-effector and object
    positions ``(N, 3)`` / ``(N, num_objects, 3)`` at each frame (for checks, not stored)."""

    frames: np.ndarray
    actions: np.ndarray
    task: str
    scene: str
    ee: np.ndarray
    objects: np.ndarray


def run_episode(sim: ArmSim, spec: RobotSpec, index: int, length: int, skip: int = 0) -> Episode:
    """Episode ``index`` of ``spec`` (a function of ``(spec.seed, index)`` only): ``length`` recorded
    frames after ``skip`` unrecorded steps."""
    if sim.size != spec.frame_size:
        raise ValueError(f"the simulator renders {sim.size}px frames, the spec asks for {spec.frame_size}px")
    rng = np.random.default_rng([spec.seed, index])
    task, scene = spec.tasks[rng.integers(len(spec.tasks))], SCENES[spec.scenes[rng.integers(len(spec.scenes))]]
    sim.reset(rng, scene, num_objects=int(rng.integers(1, 4)), tray=task == "place" or rng.random() < 0.5)
    jitter = rng.uniform((-8, -4, -0.05), (8, 4, 0.05))
    policy = TASKS[task](sim, rng, Style.draw(rng))
    for _ in range(skip):
        sim.step(next(policy))
    frames = np.empty((length, spec.frame_size, spec.frame_size, 3), np.uint8)
    actions = np.empty((length, len(ACTION_NAMES)), np.float32)
    ee, objects = np.empty((length, 3)), np.empty((length, len(sim.objects), 3))
    for j in range(length):
        frames[j] = sim.render(scene, jitter)
        ee[j], objects[j] = sim.ee_position(), [sim.position(b) for b in sim.objects]
        actions[j] = sim.step(next(policy))
    return Episode(frames, actions, task, scene.name, ee, objects)


def _shard(sim: ArmSim, spec: RobotSpec, indices: range):
    """The frames, actions and firsts of the episodes (or trajectories) ``indices``."""
    frames, actions, tasks = [], [], []
    for i in indices:
        if spec.trajectories:
            start = np.random.default_rng([spec.seed, i, 1]).integers(0, spec.episode_len - spec.trajectory_len + 1)
            ep = run_episode(sim, spec, i, spec.trajectory_len, skip=int(start))
        else:
            ep = run_episode(sim, spec, i, spec.episode_len)
        frames.append(ep.frames)
        actions.append(ep.actions if spec.actions else np.zeros((len(ep.frames), 0), np.float32))
        tasks.append(ep.task)
    firsts = np.zeros(sum(len(f) for f in frames), bool)
    firsts[np.cumsum([0] + [len(f) for f in frames[:-1]])] = True
    return np.concatenate(frames), np.concatenate(actions), firsts, tasks


@locked(lambda a: a["out"])
def generate(spec: RobotSpec, out: str, progress: bool = True) -> EpisodeStore:
    """Write ``spec``'s data to ``out`` in shards of ``episodes_per_shard`` episodes (resumes: shards
    in the index and intact on disk are skipped). One writer at a time (``avid.locks``). Records
    the frames per second of the shards it made in the index (``meta`` stays the spec's)."""
    spec = tiny.robot(spec)  # AVID_TINY=1: smoke-test size
    store = EpisodeStore(out, meta=spec.meta())
    clean_temp(store.root)
    per, kind = spec.episodes_per_shard, "trajectories" if spec.trajectories else "episodes"
    todo = [k for k in range(-(-spec.count // per)) if not store.has(f"{kind}_{k:05d}")]
    if not todo:
        return store
    sim = ArmSim(spec.frame_size, spec.substeps)
    bar = tqdm(total=spec.count, initial=spec.count - sum(len(range(k * per, min((k + 1) * per, spec.count)))
                                                          for k in todo), desc=f"robot -> {out}", disable=not progress)
    try:
        for k in todo:
            indices = range(k * per, min((k + 1) * per, spec.count))
            t0 = time.perf_counter()
            frames, actions, firsts, tasks = _shard(sim, spec, indices)
            seconds = time.perf_counter() - t0
            store.write_shard(f"{kind}_{k:05d}", frames, actions, firsts, episodes=[indices.start, indices.stop],
                              tasks=sorted(set(tasks)), seconds=round(seconds, 3))
            bar.update(len(indices))
    finally:
        bar.close()
        sim.close()
    return store


def describe(meta: dict) -> str:
    """E.g. ``robot place episodes, seed 22``."""
    return f"robot {'/'.join(meta.get('tasks', []))} episodes, seed {meta.get('seed')}"


def shared_episodes(a: dict, b: dict) -> str | None:
    """What two robot datasets have in common (their episodes are drawn from the same seed), else None."""
    if a.get("source") == b.get("source") == "robot" and a.get("seed") == b.get("seed"):
        return f"robot episodes of seed {a.get('seed')}"
    return None


def frames_per_second(store: EpisodeStore) -> float | None:
    """Frames stored per second of generation (rendered frames; skipped steps are not counted),
    over the shards that record their time."""
    timed = [s for s in store.shards if s.get("seconds")]
    return sum(s["frames"] for s in timed) / sum(s["seconds"] for s in timed) if timed else None
