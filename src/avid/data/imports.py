"""Real robot data in (``avid data import``): RLDS / Open X-Embodiment TFRecord files (RT-1's release
format) and folders of MP4 videos with per-frame action arrays, stored as the project's episodes.

**RLDS TFRecords** are read without TensorFlow: the ``tfrecord`` package frames the records and
parses ``tf.train.Example`` with its own protobuf message. TFDS writes one Example per episode with
the steps flattened into lists: ``steps/observation/image`` holds one encoded image (JPEG or PNG)
per step, ``steps/action/world_vector`` ``3 N`` floats, ``steps/action/rotation_delta`` ``3 N`` and
``steps/action/gripper_closedness_action`` ``N`` (RT-1's 7-D action; other datasets name other
keys, ``--image-key`` and ``--action-keys`` choose them; a key's width is its length over ``N``).

**A video folder** holds ``NAME.mp4`` with ``NAME.npy`` beside it: ``(T, A)`` float actions, one per
frame (``actions[j]`` taken after frame ``j``), or ``T - 1`` of them (the last frame has none).

Frames are resized to fit the square frame and padded (centred, black) to it, as the paper resizes
and pads RT-1's 256x320 frames to DynamiCrafter's 320x512 (section 9.2). Actions are mapped
linearly from per-dimension bounds to [-1, 1] (values outside are clipped, and counted): RT-1's own
bounds (``rt1``: world vector [-1, 1], rotation delta [-pi/2, pi/2], gripper [-1, 1]), the bounds of
the imported episodes (``data``), or those of an earlier import (its folder), so a test split shares
its training split's scale. The Action Error Ratio's regressor standardises them further (9.3).
Episodes go to the ``train`` or ``test`` split by a hash of (seed, file, episode) (the paper keeps 5%
for testing); a rerun resumes: one shard per input file (RLDS) or per 16 videos.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from avid.data.storage import EpisodeStore, clean_temp
from avid.locks import locked

RT1_IMAGE_KEY = "steps/observation/image"
RT1_ACTION_KEYS = ("steps/action/world_vector", "steps/action/rotation_delta", "steps/action/gripper_closedness_action")
RT1_BOUNDS = ([-1.0] * 3 + [-math.pi / 2] * 3 + [-1.0], [1.0] * 3 + [math.pi / 2] * 3 + [1.0])
FORMATS = ("rlds", "videos")
VIDEOS_PER_SHARD = 16


def fit_and_pad(frame: np.ndarray, size: int) -> np.ndarray:
    """``(h, w, 3)`` uint8 -> ``(size, size, 3)``: resized (antialiased) so its longer side is
    ``size``, the shorter side padded with black, centred (section 9.2's resize and pad)."""
    h, w = frame.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    image = Image.fromarray(frame).resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = np.asarray(image.convert("RGB"))
    return out


@dataclass
class ImportSpec:
    """What to import: ``inputs`` (TFRecord files, or MP4 files with their ``.npy``) of ``format``."""

    format: str
    inputs: list[str]
    frame_size: int = 64
    image_key: str = RT1_IMAGE_KEY
    action_keys: list[str] = field(default_factory=lambda: list(RT1_ACTION_KEYS))
    action_bounds: str | None = None  # "rt1", "data", an earlier import's folder; None: rt1 for RT-1's keys, else data
    split: str = "all"  # "all", "train" or "test"
    test_fraction: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if not self.inputs:
            raise ValueError("no input files to import")
        if self.split not in ("all", "train", "test") or not 0 <= self.test_fraction < 1:
            raise ValueError(f"need split all, train or test and 0 <= test_fraction < 1, got {self.split!r}, "
                             f"{self.test_fraction}")
        if self.frame_size < 8:
            raise ValueError(f"frame_size must be at least 8, got {self.frame_size}")
        self.inputs, self.action_keys = [str(Path(p).resolve()) for p in self.inputs], list(self.action_keys)
        if self.action_bounds is None:
            rt1 = self.format == "rlds" and self.action_keys == list(RT1_ACTION_KEYS)
            self.action_bounds = "rt1" if rt1 else "data"

    def in_split(self, file: str, episode: int) -> bool:
        if self.split == "all":
            return True
        test = zlib.crc32(f"{self.seed}:{Path(file).name}:{episode}".encode()) / 2**32 < self.test_fraction
        return test == (self.split == "test")


def find_inputs(paths: list[str]) -> tuple[str, list[str]]:
    """The format and the sorted input files of ``paths`` (files, or folders of ``.mp4`` or
    ``*.tfrecord*`` files)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.mp4")) + sorted(f for f in p.glob("*.tfrecord*") if f.is_file())
            if not found:
                raise ValueError(f"{p} holds no .mp4 or .tfrecord files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"no such file or folder: {p}")
    kinds = {"videos" if f.suffix == ".mp4" else "rlds" for f in files}
    if len(kinds) > 1:
        raise ValueError("the inputs mix MP4 videos and TFRecord files; import them separately")
    return kinds.pop(), [str(f) for f in files]


# ---- reading ------------------------------------------------------------------------------------

def rlds_episodes(path: str, image_key: str, action_keys: list[str]) -> Iterator[tuple[list[bytes], np.ndarray]]:
    """Each episode of one RLDS TFRecord file: its encoded images and ``(N, A)`` float actions."""
    from google.protobuf.message import DecodeError
    from tfrecord import example_pb2
    from tfrecord.reader import tfrecord_iterator

    with open(path, "rb") as f:
        compression = "gzip" if f.read(2) == b"\x1f\x8b" else None
    try:
        for k, record in enumerate(tfrecord_iterator(path, compression_type=compression)):
            example = example_pb2.Example()
            example.ParseFromString(bytes(record))
            feats = example.features.feature
            missing = [key for key in (image_key, *action_keys) if key not in feats]
            if missing:
                raise ValueError(f"{path} episode {k} has no feature(s) {missing}; it has {sorted(feats)} "
                                 "(choose them with --image-key and --action-keys)")
            images = list(feats[image_key].bytes_list.value)
            n, parts = len(images), []
            for key in action_keys:
                feat = feats[key]
                values = np.asarray(feat.float_list.value if feat.HasField("float_list") else feat.int64_list.value,
                                    np.float32)
                if n == 0 or values.size % n:
                    raise ValueError(f"{path} episode {k}: {key} has {values.size} values for {n} steps")
                parts.append(values.reshape(n, -1))
            yield images, np.concatenate(parts, axis=1)
    except (DecodeError, RuntimeError, OSError, EOFError, gzip.BadGzipFile) as e:
        raise ValueError(f"cannot read {path} as TFRecord episodes ({type(e).__name__}: {e})") from None


def decode_image(data: bytes, where: str) -> np.ndarray:
    import io

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise ValueError(f"{where}: an image that cannot be decoded ({e})") from None


def video_episode(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``(T, H, W, 3)`` uint8 frames of an MP4 and ``(T, A)`` float32 actions from ``NAME.npy``."""
    import av

    npy = Path(path).with_suffix(".npy")
    if not npy.is_file():
        raise ValueError(f"{path} has no action file {npy.name} beside it ((T, A) actions, one per frame)")
    try:
        with av.open(path) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    except (av.error.FFmpegError, ValueError) as e:
        raise ValueError(f"cannot decode the video {path} ({e})") from None
    actions = np.load(npy).astype(np.float32)
    if actions.ndim == 1:
        actions = actions[:, None]
    if actions.ndim != 2 or len(actions) not in (len(frames), len(frames) - 1):
        raise ValueError(f"{npy} holds actions of shape {actions.shape}; {path} has {len(frames)} frames, so "
                         f"expected ({len(frames)}, A) or ({len(frames) - 1}, A)")
    if len(actions) == len(frames) - 1:  # the last frame's action is never used: repeat the one before
        actions = np.concatenate([actions, actions[-1:]])
    return frames, actions


def episodes(spec: ImportSpec, file: str) -> Iterator[tuple[int, list[np.ndarray] | list[bytes], np.ndarray]]:
    """``(index, frames or encoded images, raw actions)`` of the episodes of ``file`` in the split."""
    if spec.format == "videos":
        if spec.in_split(file, 0):
            yield (0, *video_episode(file))
        return
    for k, (images, actions) in enumerate(rlds_episodes(file, spec.image_key, spec.action_keys)):
        if spec.in_split(file, k):
            yield k, images, actions


# ---- bounds and writing -------------------------------------------------------------------------

def action_bounds(spec: ImportSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension ``(low, high)`` that map to [-1, 1]."""
    if spec.action_bounds == "rt1":
        if spec.format != "rlds" or spec.action_keys != list(RT1_ACTION_KEYS):
            raise ValueError("--action-bounds rt1 holds for RT-1's three action keys only; use 'data' or an "
                             "earlier import's folder")
        return np.array(RT1_BOUNDS[0]), np.array(RT1_BOUNDS[1])
    if spec.action_bounds == "data":
        acts = [a for f in spec.inputs for _, _, a in episodes(spec, f)]
        if not acts:
            raise ValueError(f"no episodes in the {spec.split} split of the inputs")
        acts = np.concatenate(acts)
        return acts.min(0).astype(np.float64), acts.max(0).astype(np.float64)
    meta = EpisodeStore(spec.action_bounds).meta
    if "action_low" not in meta:
        raise ValueError(f"{spec.action_bounds} records no action bounds (not made by `avid data import`)")
    return np.array(meta["action_low"]), np.array(meta["action_high"])


def normalise(actions: np.ndarray, low: np.ndarray, high: np.ndarray, where: str = "the actions") -> tuple[np.ndarray, int]:
    """Actions mapped from ``[low, high]`` to [-1, 1] per dimension (a constant dimension to 0),
    clipped; and how many values were clipped."""
    if actions.shape[1] != len(low):
        raise ValueError(f"{where}: {actions.shape[1]}-D actions, but the bounds (and the dataset) are {len(low)}-D")
    span = np.where(high > low, high - low, 1.0)
    out = np.where(high > low, 2 * (actions - low) / span - 1, 0.0)
    clipped = int((np.abs(out) > 1 + 1e-6).sum())
    return np.clip(out, -1, 1).astype(np.float32), clipped


def _groups(spec: ImportSpec) -> list[tuple[str, list[str]]]:
    """Shards: one per TFRecord file, one per ``VIDEOS_PER_SHARD`` videos."""
    per = 1 if spec.format == "rlds" else VIDEOS_PER_SHARD
    chunks = [spec.inputs[i:i + per] for i in range(0, len(spec.inputs), per)]
    return [(f"{n:05d}_{Path(c[0]).name.replace('.', '_')}", c) for n, c in enumerate(chunks)]


@locked(lambda a: a["out"])
def import_dataset(spec: ImportSpec, out: str, progress: bool = True) -> tuple[EpisodeStore, int]:
    """Write ``spec``'s episodes to ``out`` (resumes: shards already there are skipped). Returns
    the store and the number of action values clipped to [-1, 1] in this call."""
    low, high = action_bounds(spec)
    meta = {"source": "import", "action_kind": "continuous", "num_actions": len(low), "action_range": [-1.0, 1.0],
            "action_low": low.tolist(), "action_high": high.tolist(), **spec.__dict__}
    store = EpisodeStore(out, meta=meta)
    clean_temp(store.root)
    clipped_total = 0
    groups = [g for g in _groups(spec) if not store.has(g[0])]
    for name, files in tqdm(groups, desc=f"import -> {out}", disable=not progress):
        frames, actions, firsts, count = [], [], [], 0
        for file in files:
            for k, images, raw in episodes(spec, file):
                where = f"{file} episode {k}"
                frames += [fit_and_pad(decode_image(im, where) if isinstance(im, bytes) else im, spec.frame_size)
                           for im in images]
                acts, clipped = normalise(raw, low, high, where)
                actions.append(acts)
                clipped_total += clipped
                firsts += [True] + [False] * (len(raw) - 1)
                count += 1
        if count:  # (files whose episodes all fall in the other split write nothing)
            store.write_shard(name, np.stack(frames), np.concatenate(actions), np.asarray(firsts, bool),
                              files=[Path(f).name for f in files], episodes=count)
    if not store.num_frames():
        raise ValueError(f"no episodes were imported into {out} (split {spec.split!r})")
    return store, clipped_total
