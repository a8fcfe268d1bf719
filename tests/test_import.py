"""Real robot data in: RLDS TFRecord episodes (RT-1's layout, plain or gzip) and MP4 folders with
per-frame actions become the project's episodes; frames are resized to fit and padded (paper 9.2),
actions mapped from their bounds to [-1, 1]; splits are disjoint; bad files fail with one line."""

import gzip
import io
import math

import numpy as np
import pytest
from PIL import Image

from avid.cli import main
from avid.data import EpisodeStore, WindowDataset
from avid.data.imports import RT1_ACTION_KEYS, ImportSpec, find_inputs, fit_and_pad, import_dataset
from avid.pipelines.report import write_video

pytest.importorskip("tfrecord")
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (40, 220, 220), (220, 40, 220)]


def png(colour, h=24, w=32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), colour, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def rt1_episode(n: int, rng: np.random.Generator):
    """An RT-1-layout episode: n PNG images (a colour per step) and its raw 7-D actions."""
    actions = np.concatenate([rng.uniform(-0.5, 0.5, (n, 3)), rng.uniform(-2.0, 2.0, (n, 3)),
                              rng.choice([-1.0, 1.0], (n, 1))], axis=1).astype(np.float32)
    features = {"steps/observation/image": ([png(COLOURS[j % 6]) for j in range(n)], "byte"),
                "steps/action/world_vector": (actions[:, :3].ravel().tolist(), "float"),
                "steps/action/rotation_delta": (actions[:, 3:6].ravel().tolist(), "float"),
                "steps/action/gripper_closedness_action": (actions[:, 6].tolist(), "float"),
                "steps/is_first": ([1] + [0] * (n - 1), "int"),
                "steps/observation/natural_language_instruction": ([b"pick the can"] * n, "byte")}
    return features, actions


def write_rlds(path, lengths, seed=0):
    from tfrecord.writer import TFRecordWriter

    rng = np.random.default_rng(seed)
    writer = TFRecordWriter(str(path))
    actions = []
    for n in lengths:
        features, a = rt1_episode(n, rng)
        writer.write(features)
        actions.append(a)
    writer.close()
    return actions


def test_fit_and_pad_keeps_the_aspect_ratio_and_pads_with_black():
    out = fit_and_pad(np.full((24, 32, 3), 200, np.uint8), 16)  # 24x32 -> 12x16, two black rows above and below
    assert out.shape == (16, 16, 3) and (out[:2] == 0).all() and (out[14:] == 0).all() and (out[2:14] == 200).all()
    tall = fit_and_pad(np.full((40, 20, 3), 90, np.uint8), 8)  # 40x20 -> 8x4, columns padded
    assert (tall[:, :2] == 0).all() and (tall[:, 6:] == 0).all() and (tall[:, 2:6] == 90).all()


def test_an_rt1_tfrecord_file_imports_as_episodes_with_actions_in_rt1_bounds(tmp_path):
    raw = write_rlds(tmp_path / "rt1-train.tfrecord-00000-of-00001", [5, 4, 6])
    store, clipped = import_dataset(ImportSpec("rlds", [str(tmp_path / "rt1-train.tfrecord-00000-of-00001")],
                                               frame_size=16), str(tmp_path / "out"), progress=False)
    data = store.load_all()
    assert data["frames"].shape == (15, 16, 16, 3) and data["firsts"].nonzero()[0].tolist() == [0, 5, 9]
    assert (data["frames"][:, :2] == 0).all() and (data["frames"][0, 2:14] == COLOURS[0]).all()
    assert (data["frames"][6, 2:14] == COLOURS[1]).all()  # the second episode's second step
    raw = np.concatenate(raw)
    want = raw / np.array([1, 1, 1, math.pi / 2, math.pi / 2, math.pi / 2, 1], np.float32)  # RT-1's bounds
    assert np.allclose(data["actions"], np.clip(want, -1, 1), atol=1e-6)
    assert clipped == int((np.abs(want) > 1).sum()) > 0  # rotations beyond pi/2 are clipped and counted
    assert store.meta["action_kind"] == "continuous" and store.meta["num_actions"] == 7
    ds = WindowDataset(store, frames=4, cond_frames=2)
    assert len(ds) == 2 + 1 + 3 and ds[0]["actions"].shape == (2, 7)


def test_gzip_tfrecords_and_train_test_splits(tmp_path):
    plain = tmp_path / "a.tfrecord"
    write_rlds(plain, [3] * 8, seed=1)
    zipped = tmp_path / "z" / "a.tfrecord.gz"
    zipped.parent.mkdir()
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    a = import_dataset(ImportSpec("rlds", [str(plain)], frame_size=8), str(tmp_path / "p"), progress=False)[0]
    b = import_dataset(ImportSpec("rlds", [str(zipped)], frame_size=8), str(tmp_path / "g"), progress=False)[0]
    assert np.array_equal(a.load_all()["frames"], b.load_all()["frames"])
    parts = {split: import_dataset(ImportSpec("rlds", [str(plain)], frame_size=8, split=split, test_fraction=0.5),
                                   str(tmp_path / split), progress=False)[0] for split in ("train", "test")}
    counts = {k: int(s.load_all()["firsts"].sum()) for k, s in parts.items()}
    assert counts["train"] + counts["test"] == 8 and min(counts.values()) > 0
    test_actions = {a.tobytes() for a in parts["test"].load_all()["actions"]}  # random per step: episodes differ
    assert not test_actions & {a.tobytes() for a in parts["train"].load_all()["actions"]}


def test_a_rerun_resumes_and_a_test_split_can_share_the_training_bounds(tmp_path):
    files = [tmp_path / f"d.tfrecord-{i}" for i in range(2)]
    for i, f in enumerate(files):
        write_rlds(f, [4, 4], seed=i)
    keys = ["steps/action/world_vector", "steps/action/gripper_closedness_action"]  # a 4-D action
    spec = ImportSpec("rlds", [str(f) for f in files], frame_size=8, action_keys=keys)
    assert spec.action_bounds == "data"
    store = import_dataset(spec, str(tmp_path / "tr"), progress=False)[0]
    acts = store.load_all()["actions"]
    assert acts.shape == (16, 4) and np.allclose(acts.min(0), -1) and np.allclose(acts.max(0), 1)
    first = store.root / store.shards[0]["file"]
    saved = first.read_bytes()
    first.unlink()
    again = import_dataset(spec, str(tmp_path / "tr"), progress=False)[0]
    assert first.read_bytes() == saved and len(again.shards) == 2
    shared = ImportSpec("rlds", [str(files[0])], frame_size=8, action_keys=keys, action_bounds=str(tmp_path / "tr"))
    other = import_dataset(shared, str(tmp_path / "te"), progress=False)[0]
    assert other.meta["action_low"] == store.meta["action_low"]
    assert np.allclose(other.load_all()["actions"], acts[:8])


def test_an_mp4_folder_with_per_frame_actions_imports(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n, rows in (("ep0", 6, 6), ("ep1", 5, 4)):  # one action per frame, or one fewer
        frames = np.stack([np.full((24, 32, 3), COLOURS[j], np.uint8) for j in range(n)])
        write_video(folder / f"{name}.mp4", frames)
        np.save(folder / f"{name}.npy", rng.uniform(-3, 3, (rows, 7)))
    fmt, files = find_inputs([str(folder)])
    assert fmt == "videos" and [f.rsplit("/", 1)[1] for f in files] == ["ep0.mp4", "ep1.mp4"]
    store, clipped = import_dataset(ImportSpec(fmt, files, frame_size=16), str(tmp_path / "out"), progress=False)
    data = store.load_all()
    assert data["frames"].shape == (11, 16, 16, 3) and data["firsts"].nonzero()[0].tolist() == [0, 6]
    assert (data["frames"][:, :2] == 0).all()  # padding is exact, the video codec is lossy
    assert np.abs(data["frames"][7, 4:12].astype(int) - COLOURS[1]).max() < 16
    acts = data["actions"]
    assert np.allclose(acts.min(0), -1) and np.allclose(acts.max(0), 1) and clipped == 0
    assert np.array_equal(acts[-1], acts[-2])  # the missing last action repeats the one before


def test_bad_inputs_fail_with_one_clear_line(tmp_path, capsys):
    write_rlds(tmp_path / "x.tfrecord", [3])
    with pytest.raises(SystemExit):
        main(["data", "import", str(tmp_path / "x.tfrecord"), "--image-key", "steps/observation/rgb",
              "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert err.startswith("avid: error:")
    assert "no feature(s) ['steps/observation/rgb']" in err and "steps/observation/image" in err
    (tmp_path / "bad.tfrecord").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00garbage")
    with pytest.raises(ValueError, match="cannot read .*bad.tfrecord"):
        import_dataset(ImportSpec("rlds", [str(tmp_path / "bad.tfrecord")]), str(tmp_path / "b"), progress=False)
    folder = tmp_path / "v"
    folder.mkdir()
    write_video(folder / "e.mp4", np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="no action file e.npy"):
        import_dataset(ImportSpec("videos", [str(folder / "e.mp4")]), str(tmp_path / "c"), progress=False)
    np.save(folder / "e.npy", np.zeros((9, 2)))
    with pytest.raises(ValueError, match=r"expected \(4, A\) or \(3, A\)"):
        import_dataset(ImportSpec("videos", [str(folder / "e.mp4")]), str(tmp_path / "c"), progress=False)
    with pytest.raises(ValueError, match="rt1 holds for RT-1's three action keys only"):
        import_dataset(ImportSpec("videos", [str(folder / "e.mp4")], action_bounds="rt1"), str(tmp_path / "c"))
    with pytest.raises(ValueError, match="mix MP4 videos and TFRecord"):
        find_inputs([str(tmp_path / "x.tfrecord"), str(folder / "e.mp4")])


def test_the_command_imports_an_rt1_file(tmp_path, capsys):
    write_rlds(tmp_path / "rt1.tfrecord", [4, 3])
    main(["data", "import", str(tmp_path), "--frame-size", "8", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "7 frames of 2 episodes in 1 shards" in out and "7-D actions in [-1, 1]" in out
    assert EpisodeStore(tmp_path / "out").meta["action_keys"] == list(RT1_ACTION_KEYS)
