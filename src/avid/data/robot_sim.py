"""A headless simulated robot arm: pybullet's Franka Panda on a table, objects and a tray, seen by
one camera at 64x64 (TinyRenderer, no GPU, no display), driven by RT-1-style 7-D actions.

An action ``a`` ``(7,)`` in ``[-1, 1]`` is ``(dx, dy, dz, droll, dpitch, dyaw, gripper)``: the first
six move the commanded end-effector pose by ``a * ACTION_SCALE`` (metres, radians) per step, the
last is the gripper's closedness (-1 open, +1 closed; RT-1's ``gripper_closedness_action`` sign). The
arm follows the commanded pose through inverse kinematics and position control over ``substeps``
physics steps of 1/240 s. ``step`` returns the action as applied: the commanded pose is kept inside
the workspace, so an action that would leave it is recorded as the move that was made.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
MAX_DPOS, MAX_DROT = 0.03, 0.2  # metres and radians per step at |action| = 1
ACTION_SCALE = np.array([MAX_DPOS] * 3 + [MAX_DROT] * 3 + [1.0], np.float32)
WORKSPACE = np.array([[0.30, -0.30, 0.015], [0.72, 0.30, 0.40]])  # end-effector box (table top at z = 0)
MAX_TILT = 0.5  # radians of roll and pitch away from "gripper down"
HOME = (0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.79)  # Panda joint angles of a pose above the table
ARM, FINGERS, EE_LINK = tuple(range(7)), (9, 10), 11
FINGER_OPEN = 0.04  # metres per finger


@dataclass(frozen=True)
class Scene:
    """How a scene looks: colours of the table and floor, camera and light."""

    name: str
    table: tuple[float, float, float]
    floor: tuple[float, float, float]
    camera_yaw: float  # degrees; 90 looks at the robot from the front
    camera_pitch: float
    camera_distance: float
    light: tuple[float, float, float]


SCENES = {s.name: s for s in (
    Scene("lab", (0.78, 0.78, 0.80), (0.35, 0.35, 0.38), 90, -40, 0.70, (1.0, 0.5, 2.0)),
    Scene("wood", (0.62, 0.45, 0.28), (0.20, 0.22, 0.25), 65, -40, 0.70, (0.5, -1.0, 2.0)),
    Scene("dark", (0.22, 0.24, 0.27), (0.55, 0.52, 0.48), 115, -45, 0.72, (-0.5, 1.0, 2.0)),
    Scene("green", (0.30, 0.52, 0.36), (0.72, 0.72, 0.70), 90, -55, 0.65, (1.0, 1.0, 1.5)),
)}
SHAPES = ("box", "cylinder", "sphere")
COLOURS = ((0.85, 0.15, 0.15), (0.15, 0.65, 0.20), (0.15, 0.30, 0.85), (0.95, 0.80, 0.10),
           (0.90, 0.45, 0.05), (0.60, 0.20, 0.75), (0.10, 0.75, 0.80), (0.95, 0.95, 0.95))


@contextlib.contextmanager
def _quiet_stdout():
    """pybullet's C code prints to file descriptors 1 and 2 on import, connect and load (its
    failures raise Python exceptions); keep that off the console."""
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        for fd, saved_fd in zip((1, 2), saved):
            os.dup2(saved_fd, fd)
            os.close(saved_fd)


class ArmSim:
    """One pybullet world (its own DIRECT client). ``reset`` builds a scene, ``step`` applies an
    action, ``render`` returns the camera image ``(size, size, 3)`` uint8."""

    def __init__(self, size: int = 64, substeps: int = 8, shadows: bool = False) -> None:
        with _quiet_stdout():
            import pybullet as p
            import pybullet_data
            from pybullet_utils.bullet_client import BulletClient

            self.c = BulletClient(connection_mode=p.DIRECT)
        self.c.setAdditionalSearchPath(pybullet_data.getDataPath())
        self.p, self.size, self.substeps, self.shadows = p, size, substeps, shadows
        self.objects: list[int] = []
        self.tray: int | None = None

    # ---- the scene ------------------------------------------------------------------------------
    def reset(self, rng: np.random.Generator, scene: Scene, num_objects: int, tray: bool) -> None:
        """A new world: ``scene``'s table and floor, the arm at a random pose above the table,
        ``num_objects`` random shapes on the table and, with ``tray``, a tray among them."""
        c = self.c
        c.resetSimulation()
        c.setGravity(0, 0, -9.81)
        self._box((1.2, 1.4, 0.05), (0.45, 0, -0.025), scene.table, mass=0)  # table top at z = 0
        self._box((4, 4, 0.02), (0.45, 0, -0.7), scene.floor, mass=0)
        with _quiet_stdout():
            self.robot = c.loadURDF("franka_panda/panda.urdf", (0, 0, 0), useFixedBase=True)
        for j in FINGERS:
            c.changeDynamics(self.robot, j, lateralFriction=2.0)
        taken: list[tuple[np.ndarray, float]] = []
        self.tray = None
        if tray:
            at = self._free_spot(rng, taken, 0.16)
            with _quiet_stdout():
                self.tray = c.loadURDF("tray/traybox.urdf", (*at, 0), c.getQuaternionFromEuler((0, 0, rng.uniform(0, np.pi))),
                                       useFixedBase=True, globalScaling=0.4)
            c.changeVisualShape(self.tray, -1, rgbaColor=(*COLOURS[rng.integers(len(COLOURS))], 1))
        self.objects = []
        for _ in range(num_objects):
            at = self._free_spot(rng, taken, 0.06)
            self.objects.append(self._shape(rng, SHAPES[rng.integers(len(SHAPES))], at))
        start = rng.uniform(WORKSPACE[0] + [0.05, 0.05, 0.15], WORKSPACE[1] - [0.05, 0.05, 0.0])
        self.cmd_pos, self.cmd_rpy, self.grip = start, np.array([np.pi, 0.0, rng.uniform(-0.5, 0.5)]), -1.0
        for j, q in zip(ARM, HOME):
            c.resetJointState(self.robot, j, q)
        for _ in range(4):  # start in the commanded pose, not in a swing towards it
            for j, q in zip(ARM, self._ik()):
                c.resetJointState(self.robot, j, q)
        for j in FINGERS:
            c.resetJointState(self.robot, j, FINGER_OPEN)
        self._drive()
        for _ in range(24):  # let the objects settle
            c.stepSimulation()

    def _free_spot(self, rng, taken: list, radius: float) -> np.ndarray:
        """A point on the table in the arm's reach, at least ``radius`` from every earlier one."""
        for _ in range(100):
            at = rng.uniform((0.38, -0.24), (0.66, 0.24))
            if all(np.linalg.norm(at - q) > radius + r for q, r in taken):
                break
        taken.append((at, radius))
        return at

    def _box(self, size, pos, rgb, mass: float) -> int:
        half = [s / 2 for s in size]
        c = self.c
        return c.createMultiBody(mass, c.createCollisionShape(self.p.GEOM_BOX, halfExtents=half),
                                 c.createVisualShape(self.p.GEOM_BOX, halfExtents=half, rgbaColor=(*rgb, 1)), pos)

    def _shape(self, rng, shape: str, at: np.ndarray) -> int:
        c, p = self.c, self.p
        rgb = (*COLOURS[rng.integers(len(COLOURS))], 1)
        if shape == "box":
            half = rng.uniform(0.022, 0.032, 3)
            kw, height = {"halfExtents": half}, half[2]
            col, vis = c.createCollisionShape(p.GEOM_BOX, **kw), c.createVisualShape(p.GEOM_BOX, rgbaColor=rgb, **kw)
        elif shape == "cylinder":
            r, h = rng.uniform(0.022, 0.03), rng.uniform(0.05, 0.07)
            col = c.createCollisionShape(p.GEOM_CYLINDER, radius=r, height=h)
            vis, height = c.createVisualShape(p.GEOM_CYLINDER, radius=r, length=h, rgbaColor=rgb), h / 2
        else:
            r = rng.uniform(0.024, 0.032)
            col, vis = c.createCollisionShape(p.GEOM_SPHERE, radius=r), c.createVisualShape(p.GEOM_SPHERE, radius=r, rgbaColor=rgb)
            height = r
        body = c.createMultiBody(0.08, col, vis, (*at, height + 0.002), c.getQuaternionFromEuler((0, 0, rng.uniform(0, np.pi))))
        c.changeDynamics(body, -1, lateralFriction=1.5, rollingFriction=0.001, spinningFriction=0.001)
        return body

    # ---- acting ---------------------------------------------------------------------------------
    def step(self, action: np.ndarray) -> np.ndarray:
        """Apply ``action`` ``(7,)`` in [-1, 1] for one step; returns the action as applied."""
        a = np.clip(np.asarray(action, np.float64), -1, 1)
        pos = np.clip(self.cmd_pos + a[:3] * MAX_DPOS, *WORKSPACE)
        rpy = self.cmd_rpy + a[3:6] * MAX_DROT
        rpy[:2] = np.clip(rpy[:2], [np.pi - MAX_TILT, -MAX_TILT], [np.pi + MAX_TILT, MAX_TILT])
        applied = np.concatenate([(pos - self.cmd_pos) / MAX_DPOS, (rpy - self.cmd_rpy) / MAX_DROT, a[6:]])
        self.cmd_pos, self.cmd_rpy, self.grip = pos, rpy, float(a[6])
        self._drive()
        for _ in range(self.substeps):
            self.c.stepSimulation()
        return applied.astype(np.float32)

    def _ik(self) -> tuple[float, ...]:
        c = self.c
        return c.calculateInverseKinematics(self.robot, EE_LINK, self.cmd_pos, c.getQuaternionFromEuler(self.cmd_rpy),
                                            restPoses=list(HOME) + [FINGER_OPEN] * 2, maxNumIterations=30)[:7]

    def _drive(self) -> None:
        c, p = self.c, self.p
        c.setJointMotorControlArray(self.robot, ARM, p.POSITION_CONTROL, targetPositions=self._ik(), forces=[240] * 7)
        width = FINGER_OPEN * (1 - self.grip) / 2
        c.setJointMotorControlArray(self.robot, FINGERS, p.POSITION_CONTROL, targetPositions=[width] * 2, forces=[40] * 2)

    # ---- observing ------------------------------------------------------------------------------
    def ee_position(self) -> np.ndarray:
        return np.array(self.c.getLinkState(self.robot, EE_LINK)[4])

    def finger_width(self) -> float:
        return float(sum(self.c.getJointState(self.robot, j)[0] for j in FINGERS))

    def position(self, body: int) -> np.ndarray:
        return np.array(self.c.getBasePositionAndOrientation(body)[0])

    def yaw(self, body: int) -> float:
        return float(self.c.getEulerFromQuaternion(self.c.getBasePositionAndOrientation(body)[1])[2])

    def render(self, scene: Scene, jitter: np.ndarray) -> np.ndarray:
        """The camera image ``(size, size, 3)`` uint8; ``jitter`` ``(3,)`` shifts yaw, pitch (degrees)
        and distance (metres) from the scene's camera (fixed for an episode)."""
        c, p = self.c, self.p
        view = c.computeViewMatrixFromYawPitchRoll((0.48, 0, 0.04), scene.camera_distance + jitter[2],
                                                   scene.camera_yaw + jitter[0], scene.camera_pitch + jitter[1], 0, 2)
        proj = c.computeProjectionMatrixFOV(45, 1, 0.05, 4)
        img = c.getCameraImage(self.size, self.size, view, proj, renderer=p.ER_TINY_RENDERER, shadow=int(self.shadows),
                               lightDirection=scene.light, flags=p.ER_NO_SEGMENTATION_MASK)[2]
        return np.asarray(img, np.uint8).reshape(self.size, self.size, 4)[..., :3].copy()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.c.disconnect()
