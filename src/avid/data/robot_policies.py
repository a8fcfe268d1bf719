"""Scripted, noisy policies that make things happen in the robot arm's world (uniformly random
actions make videos where nothing moves): reach, push, pick and place.

A policy is a generator of 7-D actions in [-1, 1] (``avid.data.robot_sim``) that reads the world
through the simulator, runs a task's phases again and again (a new object, point or direction each
time) and never ends; the caller takes as many actions as it records. Every action is a
proportional step towards the phase's goal pose, capped at the episode's speed, plus Gaussian noise
on all six motion dimensions (and a little on the gripper), so speeds, paths and wrist angles vary
from episode to episode and from step to step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from avid.data.robot_sim import MAX_DPOS, MAX_DROT, WORKSPACE, ArmSim

Policy = Iterator[np.ndarray]


@dataclass
class Style:
    """How one episode's operator moves: top speed (fraction of the action range), noise on the
    motion dimensions and on the gripper (standard deviations in action units)."""

    speed: float
    noise: float
    grip_noise: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Style":
        return cls(speed=rng.uniform(0.45, 0.95), noise=rng.uniform(0.05, 0.3), grip_noise=rng.uniform(0.0, 0.1))


def _wrap(angle: float) -> float:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def move_to(sim: ArmSim, rng: np.random.Generator, style: Style, goal: np.ndarray, yaw: float | None, grip: float,
            tol: float = 0.008, max_steps: int = 40, speed: float | None = None) -> Policy:
    """Steps towards the end-effector position ``goal`` (and ``yaw``, None: keep) with the gripper at
    ``grip`` until within ``tol`` metres (0.1 rad) or ``max_steps``; roll and pitch drift back to
    "gripper down"."""
    goal = np.clip(goal, *WORKSPACE)
    top = style.speed if speed is None else speed
    for _ in range(max_steps):
        d_pos = (goal - sim.cmd_pos) / MAX_DPOS
        d_yaw = 0.0 if yaw is None else _wrap(yaw - sim.cmd_rpy[2]) / MAX_DROT
        if np.linalg.norm(d_pos) * MAX_DPOS < tol and abs(d_yaw) * MAX_DROT < 0.1:
            return
        tilt = -np.array([_wrap(sim.cmd_rpy[0] - np.pi), sim.cmd_rpy[1]]) / MAX_DROT * 0.3
        motion = np.clip(np.concatenate([0.7 * d_pos, tilt, [0.5 * d_yaw]]), -top, top)
        motion = motion + rng.normal(0, style.noise, 6)
        yield np.concatenate([motion, [grip + rng.normal(0, style.grip_noise)]]).clip(-1, 1)


def hold(rng: np.random.Generator, style: Style, grip: float, steps: int) -> Policy:
    """Keep still (up to noise) for ``steps`` steps with the gripper at ``grip``."""
    for _ in range(steps):
        yield np.concatenate([rng.normal(0, style.noise / 2, 6), [grip + rng.normal(0, style.grip_noise)]]).clip(-1, 1)


def _grasp_yaw(sim: ArmSim, body: int) -> float:
    """The gripper yaw, among the object's four face-aligned ones, nearest to the current one."""
    options = sim.yaw(body) + np.arange(4) * np.pi / 2
    return float(options[np.argmin([abs(_wrap(o - sim.cmd_rpy[2])) for o in options])])


def _above(p: np.ndarray, z: float) -> np.ndarray:
    return np.array([p[0], p[1], z])


def reach(sim: ArmSim, rng: np.random.Generator, style: Style) -> Policy:
    """Move the hand to random points over the table, turning the wrist and opening or closing."""
    grip = -1.0
    while True:
        goal = rng.uniform(WORKSPACE[0] + [0, 0, 0.03], WORKSPACE[1])
        if rng.random() < 0.3:
            grip = -grip
        yield from move_to(sim, rng, style, goal, sim.cmd_rpy[2] + rng.uniform(-1.2, 1.2), grip)
        yield from hold(rng, style, grip, int(rng.integers(0, 3)))


def push(sim: ArmSim, rng: np.random.Generator, style: Style) -> Policy:
    """Put the closed hand behind an object and push it across the table in a random direction."""
    while True:
        body = sim.objects[rng.integers(len(sim.objects))]
        at = sim.position(body)
        way = rng.normal(size=2)
        way = np.append(way / np.linalg.norm(way), 0.0)
        start = at - 0.07 * way
        yield from move_to(sim, rng, style, _above(start, 0.12), None, 1.0)
        yield from move_to(sim, rng, style, _above(start, 0.02), None, 1.0)
        yield from move_to(sim, rng, style, _above(at + rng.uniform(0.06, 0.16) * way, 0.02), None, 1.0,
                           speed=0.6 * style.speed)
        yield from move_to(sim, rng, style, _above(sim.cmd_pos, 0.14), None, 1.0)


def _pick_up(sim: ArmSim, rng: np.random.Generator, style: Style, body: int) -> Policy:
    """Open above the object, go down to it, close, lift."""
    at = sim.position(body)
    yaw = _grasp_yaw(sim, body)
    yield from move_to(sim, rng, style, _above(at, 0.12), yaw, -1.0)
    at = sim.position(body)
    yield from move_to(sim, rng, style, _above(at, max(at[2] - 0.005, 0.015)), yaw, -1.0, tol=0.005)
    yield from hold(rng, style, 1.0, 4)
    yield from move_to(sim, rng, style, _above(sim.cmd_pos, rng.uniform(0.15, 0.25)), None, 1.0)


def pick(sim: ArmSim, rng: np.random.Generator, style: Style) -> Policy:
    """Pick an object up, carry it to a random point and put it down."""
    while True:
        yield from _pick_up(sim, rng, style, sim.objects[rng.integers(len(sim.objects))])
        goal = rng.uniform((0.38, -0.22), (0.66, 0.22))
        yield from move_to(sim, rng, style, _above(goal, 0.15), None, 1.0)
        yield from move_to(sim, rng, style, _above(goal, 0.05), None, 1.0)
        yield from hold(rng, style, -1.0, 3)
        yield from move_to(sim, rng, style, _above(sim.cmd_pos, 0.15), None, -1.0)


def place(sim: ArmSim, rng: np.random.Generator, style: Style) -> Policy:
    """Pick an object up and place it in the tray (the held-out target task)."""
    if sim.tray is None:
        raise ValueError("the place task needs a tray in the scene")
    while True:
        yield from _pick_up(sim, rng, style, sim.objects[rng.integers(len(sim.objects))])
        tray = sim.position(sim.tray) + np.append(rng.normal(0, 0.02, 2), 0)
        yield from move_to(sim, rng, style, _above(tray, 0.16), None, 1.0)
        yield from move_to(sim, rng, style, _above(tray, 0.08), None, 1.0)
        yield from hold(rng, style, -1.0, 3)
        yield from move_to(sim, rng, style, _above(sim.cmd_pos, 0.18), None, -1.0)


TASKS: dict[str, Callable[[ArmSim, np.random.Generator, Style], Policy]] = {
    "reach": reach, "push": push, "pick": pick, "place": place}
