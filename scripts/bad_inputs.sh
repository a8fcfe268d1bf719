#!/usr/bin/env bash
# Issue 11's audit in one command: every bad input it lists, and the ones found since, run against
# this checkout. Each bad input must exit with code 2 and one line "avid[ COMMAND]: error: ..." naming the
# problem (no traceback), and leave every file that was there as it was; each repair must restore
# the original bytes; a training run killed with SIGKILL and rerun must reach the same losses and
# the same weights, bit for bit, as one that was never killed (fp32, CPU, a tiny model).
#
#   bash scripts/bad_inputs.sh [WORK_DIR]     # ~1 minute of CPU; prints one row per case, exits 1 on any FAIL
#
# Not part of the pytest suite (each case also has a test there). Cases run in one Python process
# (`avid.cli.main`), except those that need other processes (a second writer, kill -9).
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 AVID_TINY=0
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
WORK=${1:-$(mktemp -d -t avid-bad-inputs.XXXXXX)}
mkdir -p "$WORK"
exec "${PYTHON:-python}" - "$WORK" "$PWD" <<'PY'
import contextlib, hashlib, io, json, os, re, shutil, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)
from avid.cli import main
from tests.conftest import make_base, make_store

W = Path(sys.argv[1]).resolve()
os.chdir(W)
ROWS, FAILED = [], []
TINY_UNET = "{base_channels: 8, channel_mults: [1, 2], patch_size: 2, attn_from_level: 1, attn_heads: 2, " \
            "attn_head_dim: 8, cond_dim: 16, groups: 4}"


def avid(argv):
    """Run `avid argv` in this process: (exit code, stderr)."""
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, err.getvalue()


def snapshot(*folders):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(Path(f).rglob("*"))
            if p.is_file() and p.name != ".avid.lock"}


def row(defect, argv, code, line, ok, why=""):
    ROWS.append((defect, "avid " + " ".join(map(str, argv)), code, line, ok))
    if not ok:
        FAILED.append(f"{defect}: avid {' '.join(map(str, argv))}: {why}")
    print(f"{'PASS' if ok else 'FAIL'} [{defect}] avid {' '.join(map(str, argv))}\n       -> {code}: {line}", flush=True)


def bad(defect, argv, expect, keep=()):
    """`avid argv` exits 2 with one error line containing `expect`; `keep` folders unchanged."""
    before = snapshot(*keep)
    code, err = avid(argv)
    lines = err.strip().splitlines()
    line = lines[-1] if lines else ""
    problems = [why for why, failed in (
        (f"exit code {code}, not 2", code != 2), ("a traceback", "Traceback" in err),
        (f"not one error line containing {expect!r}", not (re.match(r"avid( [\w-]+)*: error: ", line) and expect in line
                                                          and sum(": error: " in x for x in lines) == 1)),
        ("changed what was there", snapshot(*keep) != before)) if failed]
    row(defect, argv, code, line, not problems, "; ".join(problems))


def good(defect, argv, check=lambda: True, what=""):
    code, err = avid(argv)
    line = (err.strip().splitlines() or [""])[-1]
    ok = code == 0 and check()
    row(defect, argv, code, f"ok{': ' + what if what else ''}" if ok else line, ok, what or f"exit {code}: {line}")


def config(path, **train):
    t = {"max_steps": 2, "batch_size": 4, "progress": False, "precision": "fp32", "ckpt_every": 1, "log_every": 1,
         **train}
    Path(path).write_text(f"out: run\nbase: {W / 'base'}\ndata: {{train: {W / 'data'}, frames: 6}}\n"
                          f"method: {{name: avid, options: {{unet: {TINY_UNET}}}}}\ntrain: {json.dumps(t)}\n")
    return path


def hold_lock(folder):
    code = ("import sys, time\nfrom avid.locks import folder_lock\nwith folder_lock(sys.argv[1]):\n"
            "    print('held', flush=True)\n    time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


# ---- set-up: a tiny base model (16 px, 20 diffusion steps), a tiny dataset, a tiny procgen set ----
for p in ("base", "data", "pg"):
    shutil.rmtree(p, ignore_errors=True)
make_base(W / "base")
make_store(W / "data")
C = config(W / "c.yaml")
PG = ["data", "procgen", "--games", "coinrun", "--levels", "0:3", "--steps-per-level", "30", "--out", "pg"]
assert avid(PG)[0] == 0
pg_files = {p.name: p.read_bytes() for p in Path("pg").glob("*.npz")}
shards = sorted(pg_files)

# 1. training never overwrites a folder holding anything but its own run
shutil.copytree(W / "base", "base-copy", dirs_exist_ok=True)
shutil.copytree(Path(sys.argv[2]) / "assets" / "action-classifier-coinrun", "classifier-copy", dirs_exist_ok=True)
Path("junk").mkdir(exist_ok=True)
Path("junk/notes.txt").write_text("mine")
bad(1, ["train", "--config", C, "--set", "out=base-copy", "train.max_steps=2"], "holds a model of kind 'avid-base-model'",
    keep=["base-copy"])
bad(1, ["train", "--config", C, "--set", "out=classifier-copy"], "holds a model of kind 'avid-action-classifier'",
    keep=["classifier-copy"])
bad(1, ["train", "--config", C, "--set", "out=pg"], "holds files no training run of avid made", keep=["pg"])
bad(1, ["train", "--config", C, "--set", "out=junk"], "holds files no training run of avid made", keep=["junk"])
shutil.rmtree("run", ignore_errors=True)
good(1, ["train", "--config", C])
shutil.rmtree("exported", ignore_errors=True)
good(1, ["export", "--run", "run", "--out", "exported"])
bad(1, ["train", "--config", C, "--set", "out=exported"], "holds files no training run of avid made", keep=["exported"])
bad(1, ["train", "--config", C, "--set", "method.name=scratch"], "holds a run with another method", keep=["run"])
bad(1, ["export", "--run", "run", "--out", "base-copy"], "export would overwrite it", keep=["base-copy"])
bad(1, ["export", "--run", "run", "--out", "run"], "is the model folder being exported", keep=["run"])
bad(1, ["export", "--run", "run", "--out", "pg"], "export would overwrite it", keep=["pg"])

# 2. a huge learning rate leaves no checkpoint a lower one cannot resume; the new rate is applied and recorded
shutil.rmtree("run-lr", ignore_errors=True)
bad(2, ["train", "--config", C, "--set", "out=run-lr", "train.lr=1e6", "train.max_steps=4"],
    "give a non-finite loss")
good(2, ["train", "--config", C, "--set", "out=run-lr", "train.lr=1e-3", "train.max_steps=4"],
     lambda: "lr: 0.001" in Path("run-lr/run.yaml").read_text()
     and max(float(v.abs().max()) for v in load_file("run-lr/model.safetensors").values()) < 100,
     "resumed at lr 1e-3, run.yaml records it, weights finite and small")

# 3. a deleted, emptied or garbled shard: a clear error, found by verify, regenerated by a rerun or --repair
Path("pg", shards[1]).unlink()
bad(3, ["loss", "--checkpoint", "run", "--data", "pg", "--limit", "4"], "--repair")
Path("pg", shards[2]).write_bytes(b"")
bad(3, ["data", "verify", "pg"], "rerun with --repair", keep=["pg"])
same = lambda: {p.name: p.read_bytes() for p in Path("pg").glob("*.npz")} == pg_files
good(3, PG, same, "the deleted and the emptied shard regenerated, byte for byte")
raw = bytearray(pg_files[shards[0]])
raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)
Path("pg", shards[0]).write_bytes(bytes(raw))
bad(3, ["train", "--config", C, "--set", "out=run-pg", "data.train=pg"], "avid data verify pg --repair")
good(3, PG, same, "a same-size garbled shard regenerated by the rerun")
Path("pg", shards[0]).write_bytes(bytes(raw))
good(3, ["data", "verify", "pg", "--repair"], same, "--repair regenerated it")

# 4. one writer per folder
holder = hold_lock("pg")
try:
    bad(4, PG, "is in use by another avid process", keep=["pg"])
    bad(4, ["data", "verify", "pg"], "is in use by another avid process", keep=["pg"])
finally:
    holder.kill()
    holder.wait()
bad(4, ["data", "procgen", "--games", "coinrun", "--levels", "10:13", "--steps-per-level", "30", "--out", "pg"],
    "holds a dataset made with other settings", keep=["pg"])
holder = hold_lock("run")
try:
    bad(4, ["train", "--config", C, "--set", "train.max_steps=3"], "is in use by another avid process", keep=["run"])
finally:
    holder.kill()
    holder.wait()

# 5. silent garbage
shutil.copytree(W / "base", "nan-base", dirs_exist_ok=True)
state = load_file("nan-base/model.safetensors")
state[next(iter(state))][..., 0] = float("nan")
save_file(state, "nan-base/model.safetensors")
rng = np.random.default_rng(0)
np.save("first.npy", rng.integers(0, 256, (2, 2, 16, 16, 3), dtype=np.uint8))
np.save("first-float.npy", rng.random((2, 2, 16, 16, 3), dtype=np.float32))
np.save("first-32px.npy", rng.integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8))
np.save("actions.npy", rng.integers(0, 5, (2, 4)))
S = ["sample", "--checkpoint", "run", "--actions", "actions.npy", "--out", "samples"]
bad(5, ["sample", "--checkpoint", "nan-base", "--first-frames", "first.npy", "--actions", "actions.npy", "--out",
        "samples"], "non-finite weights")
bad(5, [*S, "--first-frames", "first.npy", "--eta", "nan"], "sampling.eta must be a finite number >= 0, got nan")
bad(5, [*S, "--first-frames", "first-float.npy"], "--first-frames must be uint8")
bad(5, [*S, "--first-frames", "first-32px.npy"], "16x16 px; got 2 frames of 3 channels, 32x32 px")
shutil.copytree(W / "data", "data-32", dirs_exist_ok=True)
index = json.loads(Path("data-32/index.json").read_text())
index["meta"]["frame_size"] = 32
Path("data-32/index.json").write_text(json.dumps(index))
bad(5, ["train", "--config", C, "--set", "out=run-32", "data.train=data-32"], "but data-32/index.json says")

# 6. no false success
for steps in ("0", "-1", "2.5", "true"):
    bad(6, ["train", "--config", C, "--set", "out=run-6", f"train.max_steps={steps}"], "train.max_steps must be")
bad(6, ["train", "--config", C, "--set", "out=run-6", "train.batch_size=1000"], "larger than the 105 training windows")
bad(6, ["data", "procgen", "--levels", "5:2", "--out", "unused"], "expected a level range START:STOP")
bad(6, ["data", "procgen", "--levels", "0:2", "--steps-per-level", "0", "--out", "unused"], "--steps-per-level")
bad(6, [*S, "--first-frames", "first.npy", "--ddim-steps", "0"], "--ddim-steps must be at least 1, got 0")
bad(6, [*S, "--first-frames", "first.npy", "--limit", "0"], "--limit must be at least 1, got 0")
bad(6, ["loss", "--checkpoint", "run", "--data", "data", "--limit", "0"], "--limit must be at least 1, got 0")
bad(6, ["eval", "--runs", "run", "--data", "data", "--out", "report", "--limit", "0"], "--limit must be at least 1")
bad(6, ["quickstart", "--train-steps", "0"], "--train-steps must be at least 1, got 0")
bad(6, ["quickstart", "--budget-minutes", "0"], "--budget-minutes must be a positive number")
bad(6, ["quickstart", "--eval-size", "0"], "--eval-size must be at least 1, got 0")
bad(6, ["sample", "--checkpoint", "run", "--steps", "4"], "it is now --ddim-steps")
bad(6, ["classifier", "train", "--steps", "4"], "it is now --train-steps")
assert not Path("unused").exists()

# 7. sample checks its output folder before sampling
Path("a-file").write_text("not a folder")
bad(7, [*S, "--first-frames", "first.npy", "--out", "a-file/samples"], "cannot write to a-file/samples")

# 8. one line, never a traceback
bad(8, ["data", "procgen", "--levels", "0:1", "--steps-per-level", "5", "--out", "/proc/avid-data"], "cannot write to")
bad(8, ["train", "--config", C, "--set", "out=run-8", "method.options.maks=1"], "unknown key(s) ['maks'] in method.options")
bad(8, ["train", "--config", C, "--set", "out=run-8", "method.options.unet.base_chanels=8"], "unknown key(s) ['base_chanels']")
bad(8, ["train", "--config", C, "--set", "out=run-8", "base=null", "diffusion.num_step=20", "method.name=scratch"],
    "unknown key(s) ['num_step'] in config section 'diffusion'")
bad(8, ["train", "--config", C, "--set", "out=run-8", "train.lrr=1"], "unknown key(s) ['lrr'] in config section 'train'")
shutil.copytree("run", "no-key", dirs_exist_ok=True)
Path("no-key/config.yaml").write_text("\n".join(x for x in Path("run/config.yaml").read_text().splitlines()
                                                 if not x.startswith("frames:")))
bad(8, ["sample", "--checkpoint", "no-key", "--first-frames", "first.npy", "--actions", "actions.npy", "--out", "s8"],
    "'frames'")
Path("broken.yaml").write_text("train: {max_steps: 2\n")
bad(8, ["train", "--config", "broken.yaml"], "is not valid YAML")
bad(8, ["train", "--config", C, "--set", "train.lr=[1"], "the value is not valid YAML")
bad(8, ["train", "--config", C, "--set", "out=run-8", "train.strategy=foo"], "invalid strategy name")
bad(8, ["train", "--config", C, "--set", "out=run-8", "train.max_minutes=.inf"], "train.max_minutes must be positive")
bad(8, ["train", "--config", "missing.yaml"], "config file missing.yaml not found")

# 9. temp files of a killed writer are cleaned; kill -9 and rerun = one uninterrupted run
for tmp in ("run/.model.safetensors.k1.tmp", "run/checkpoints/.last.ckpt.k2.tmp", "pg/.coinrun_000009.npz.k3.tmp"):
    Path(tmp).write_bytes(b"half")
good(9, ["train", "--config", C, "--set", "train.max_steps=3"], lambda: not list(Path("run").rglob("*.tmp")),
     "a rerun removed the run's temp files")
good(9, PG, lambda: not list(Path("pg").glob("*.tmp")), "a rerun removed the dataset's temp files")

K = config(W / "k.yaml", max_steps=300, ckpt_every=40, batch_size=2)
cmd = [sys.executable, "-m", "avid.cli", "train", "--config", str(K)]
for out in ("straight", "killed"):
    shutil.rmtree(out, ignore_errors=True)
subprocess.run([*cmd, "--set", "out=straight"], check=True, capture_output=True)
p = subprocess.Popen([*cmd, "--set", "out=killed"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while not Path("killed/checkpoints/last.ckpt").exists() and p.poll() is None:
    time.sleep(0.02)
p.send_signal(signal.SIGKILL)
p.wait()
killed_at = torch.load("killed/checkpoints/last.ckpt", weights_only=False)["global_step"]
subprocess.run([*cmd, "--set", "out=killed"], check=True, capture_output=True)


def losses(folder):
    """{step: loss} over every segment's CSV; a later segment's value wins."""
    out = {}
    for csv in sorted(Path(folder, "logs").glob("version_*/metrics.csv"), key=lambda c: int(c.parent.name[8:])):
        lines = csv.read_text().splitlines()
        cols = lines[0].split(",")
        for r in lines[1:]:
            v = dict(zip(cols, r.split(",")))
            if v.get("train/loss"):
                out[int(v["step"])] = v["train/loss"]
    return out


a, b = losses("straight"), losses("killed")
wa, wb = load_file("straight/model.safetensors"), load_file("killed/model.safetensors")
resumed = [s for s in b if s >= killed_at]
same = (killed_at < 300 and len(a) == 300 and resumed and all(a[s] == b[s] for s in resumed)
        and all(a[s] == b[s] for s in b) and all(torch.equal(wa[k], wb[k]) for k in wa))
row(9, [f"train ... (SIGKILL after the checkpoint of step {killed_at}, rerun) vs uninterrupted"], 0,
    f"losses logged at steps {min(resumed, default=0)}-{max(resumed, default=0)} and final weights bit-identical" if same
    else "differ", same, "the resumed run's losses or weights differ from the uninterrupted run's")

# 10. the evaluation's sample cache never serves a retrained run's old videos
shutil.rmtree("report", ignore_errors=True)
E = ["eval", "--runs", "run", "--data", "data", "--out", "report", "--limit", "2", "--ddim-steps", "2",
     "--classifier", ""]
good(10, E)
avid(["train", "--config", C, "--set", "train.max_steps=5"])
code, err = avid(E)
row(10, E + ["(after training run further)"], code, "sampled again" if "reusing" not in err else "reused old samples",
    code == 0 and "reusing sampled videos from report/samples/run" not in err, "stale samples reused")
code, err = avid(E)
row(10, E + ["(unchanged)"], code, "reused" if "reusing" in err else "sampled again", code == 0 and "reusing" in err,
    "the cache was not used for an unchanged run")

print(f"\n{len(ROWS) - len(FAILED)} of {len(ROWS)} cases pass (work folder {W})")
for f in FAILED:
    print("FAIL", f)
sys.exit(1 if FAILED else 0)
PY
