"""Datasets that lose or garble a shard are found and regenerated; temp files of a killed writer
are cleaned; a second writer and bad generation ranges fail at once with one clear line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avid.cli import main
from avid.data import EpisodeStore, WindowDataset
from avid.data.procgen import ProcgenSpec, generate
from avid.data.verify import verify
from avid.locks import FolderBusy, folder_lock
from tests.conftest import make_store

SPEC = ProcgenSpec(["coinrun"], start_level=3, num_levels=3, steps_per_level=12)


@pytest.fixture(scope="module")
def procgen(tmp_path_factory):
    """A small Procgen dataset (3 levels x 12 steps) and a fresh copy's shard bytes to compare with."""
    root = tmp_path_factory.mktemp("pg") / "data"
    store = generate(SPEC, str(root), progress=False)
    return root, {s["file"]: (root / s["file"]).read_bytes() for s in store.shards}


def fresh(tmp_path, procgen):
    root, files = procgen
    copy = tmp_path / "data"
    copy.mkdir()
    for p in root.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    return copy, files


def test_rerunning_generation_regenerates_a_deleted_emptied_or_garbled_shard_and_cleans_temp_files(tmp_path, procgen):
    root, files = fresh(tmp_path, procgen)
    a, b, c = sorted(files)
    (root / a).unlink()
    (root / b).write_bytes(b"")
    raw = bytearray(files[c])
    raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)  # same size, garbled: only the checksum tells
    (root / c).write_bytes(bytes(raw))
    (root / ".coinrun_000005.npz.x1y2.tmp").write_bytes(b"half a shard")  # a writer killed mid-write
    generate(SPEC, str(root), progress=False)
    assert all((root / f).read_bytes() == files[f] for f in (a, b, c))
    assert not list(root.glob("*.tmp")) and verify(root)[1] == []


def test_a_garbled_shard_is_a_clear_error_found_by_verify_and_repaired(tmp_path, procgen, capsys):
    root, files = fresh(tmp_path, procgen)
    name = sorted(files)[1]
    raw = bytearray(files[name])
    raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)  # same size, garbled deflate data
    (root / name).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"cannot use shard .*{name}.*avid data verify .* --repair"):
        WindowDataset(root)  # not a raw zlib.error
    with pytest.raises(SystemExit) as e:
        main(["data", "verify", str(root)])
    out = capsys.readouterr()
    assert e.value.code == 2 and f"{name}: garbled" in out.out and "rerun with --repair" in out.err
    main(["data", "verify", str(root), "--repair"])
    assert "regenerated 1 shard" in capsys.readouterr().out
    assert (root / name).read_bytes() == files[name] and verify(root)[1] == []


def test_verify_finds_unindexed_shards_and_repair_of_other_data_says_what_to_rerun(tmp_path, capsys):
    store = make_store(tmp_path / "syn")
    (store.root / "stray.npz").write_bytes(b"left by another writer")
    (store.root / "synthetic.npz").write_bytes(b"")
    _, problems = verify(store.root)
    assert {(p.file, p.why) for p in problems} == {
        ("synthetic.npz", "empty file"),
        ("stray.npz", "not in the index (left by an interrupted or concurrent writer)")}
    main(["data", "verify", str(store.root), "--repair"])
    assert "rerun the command that made the dataset to regenerate the 1 missing shard" in capsys.readouterr().out
    assert not (store.root / "stray.npz").exists() and EpisodeStore(store.root).shards == []


def test_data_whose_metadata_states_another_frame_size_fails_clearly(tmp_path):
    root = make_store(tmp_path / "d", size=16).root
    index = json.loads((root / "index.json").read_text())
    index["meta"]["frame_size"] = 64
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="frames of shape .*16, 16, 3.*says frame_size 64"):
        WindowDataset(root, 6, 2)


def test_bad_level_ranges_and_step_counts_are_refused(capsys):
    with pytest.raises(ValueError, match="--steps-per-level must be at least 1"):
        ProcgenSpec(["coinrun"], 0, 2, steps_per_level=0)
    for argv in (["--levels", "5:2"], ["--levels", "3:3"], ["--levels", "a:b"], ["--steps-per-level", "0"]):
        with pytest.raises(SystemExit) as e:
            main(["data", "procgen", *argv, "--out", "unused"])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert e.value.code == 2 and "error:" in err and argv[0] in err, err
    assert not Path("unused").exists()


HOLD = "import sys, time\nfrom avid.locks import folder_lock\nwith folder_lock(sys.argv[1]):\n" \
       "    print('held', flush=True)\n    time.sleep(60)\n"


def hold_lock(folder):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                         env={"PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_writer_fails_at_once_and_a_killed_holder_never_blocks(tmp_path, capsys):
    holder = hold_lock(tmp_path / "data")
    try:
        with pytest.raises(FolderBusy, match=rf"in use by another avid process \(pid {holder.pid} "):
            generate(SPEC, str(tmp_path / "data"), progress=False)
        with pytest.raises(SystemExit):
            main(["data", "procgen", "--levels", "0:1", "--steps-per-level", "5", "--out", str(tmp_path / "data")])
        assert "is in use by another avid process" in capsys.readouterr().err
        with pytest.raises(FolderBusy, match="in use by another avid process"):
            verify(tmp_path / "data")  # not half-written shards reported as damaged
    finally:
        holder.kill()  # SIGKILL: no clean-up of its own; the lock file stays behind
        holder.wait()
    assert (tmp_path / "data" / ".avid.lock").exists()
    with folder_lock(tmp_path / "data"):  # ... and does not block
        with folder_lock(tmp_path / "data"):  # the same process may take it again
            pass


def test_write_shard_refuses_frames_of_another_size_than_the_metadata(tmp_path):
    store = make_store(tmp_path / "d", size=16)
    with pytest.raises(ValueError, match="metadata says 16px"):
        store.write_shard("x", np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, np.int64), np.zeros(4, bool))
