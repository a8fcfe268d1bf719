"""Every ```bash block of README.md runs at smoke-test size (``AVID_TINY=1``), so the README cannot
drift from the code.

The blocks are read from README.md when the test runs. Each block goes through bash, with ``avid``
and ``python`` defined as shell functions that record their arguments, so variables, loops and
quoting expand exactly as for a reader; the recorded commands then run in this process, in order:
``avid ...`` through ``avid.cli.main`` (what the ``avid`` console script calls) and ``python -c``
through ``exec``. They run in a fresh folder laid out like a clone (``configs/`` linked, ``assets/``
copied, so nothing in the repository is written). Not run: the set-up line (``python3 -m venv``,
``pip``), ``pytest`` itself, lines marked ``# GPU`` (the paper's scale) and ``# shell N`` (a server and its client). ``pytest -s`` prints
what each command took (wall and CPU seconds).

The README's sections fall into groups (``GROUPS``) whose blocks read none of the other groups'
outputs; each group runs in order in a clone of its own, one test file per group
(tests/test_readme_comparison.py, tests/test_readme_robot.py, the rest here), so that pytest's
workers run them side by side. Every block belongs to exactly one group (checked below).
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import time
from fnmatch import fnmatch
from pathlib import Path

import pytest

from avid.checkpoint import REPO_ROOT
from avid.cli import main
from avid.locks import LOCK_NAME

README = REPO_ROOT / "README.md"
NOT_RUN = re.compile(r"^\s*(python3 -m venv|pip |pytest)|# GPU|# shell \d")  # shell N: a server and its client
RECORD = r"""
__rec() { printf '%s\0' "$#" "$@" >> "$AVID_README_RECORD"; }
avid() { __rec avid "$@"; }
python() { __rec python "$@"; }
"""


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def recorded_commands(block: str, record: Path) -> list[list[str]]:
    """The commands of ``block`` as bash expands them (functions record instead of running)."""
    record.write_bytes(b"")
    script = RECORD + "\n".join(line for line in block.splitlines() if not NOT_RUN.search(line))
    subprocess.run(["bash", "-e", "-c", script], check=True, env={"AVID_README_RECORD": str(record), "PATH": "/usr/bin:/bin"})
    tokens = record.read_bytes().split(b"\0")[:-1]
    commands, k = [], 0
    while k < len(tokens):
        n = int(tokens[k])
        commands.append([t.decode() for t in tokens[k + 1:k + 1 + n]])
        k += 1 + n
    return commands


def run(command: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if command[0] == "avid":
            main(command[1:])
        elif command[:2] == ["python", "-c"] and len(command) == 3:
            exec(compile(command[2], "<README python -c>", "exec"), {"__name__": "__main__"})
        else:
            raise AssertionError(f"the README test cannot run {command}")
    return out.getvalue()


# README sections (by the start of their ``##``/``###`` heading) whose blocks run apart from the others,
# in a clone of their own: they use no output of any other group's blocks. Every other section: "main".
GROUPS = {
    "robot": ("## The robot domain",),  # tests/test_readme_robot.py
    # the step-by-step path, the Coinrun comparison and evaluating its runs: tests/test_readme_comparison.py
    "comparison": ("## Step by step", "## Baselines, ablations and the paper's comparison", "## Evaluation and metrics"),
}
HEADING = re.compile(r"^#{2,3} .*$", re.M)


def sections(text: str) -> list[tuple[str, str]]:
    """``(heading, text)`` of every ``##`` or ``###`` section (up to the next such heading), and of the
    text before the first one (heading "")."""
    starts = [0, *(m.start() for m in HEADING.finditer(text)), len(text)]
    parts = [text[a:b] for a, b in zip(starts, starts[1:]) if b > a]
    return [(part.split("\n", 1)[0] if HEADING.match(part) else "", part) for part in parts]


def group_of(heading: str) -> str:
    return next((g for g, heads in GROUPS.items() if heading.startswith(heads)), "main")


def group_blocks(group: str, text: str | None = None) -> list[str]:
    """The ```bash blocks of ``group``'s sections, in README order."""
    text = README.read_text() if text is None else text
    return [b for heading, part in sections(text) if group_of(heading) == group for b in bash_blocks(part)]


def run_blocks(blocks: list[str], tmp_path: Path, monkeypatch) -> tuple[Path, list[list[str]]]:
    """Run ``blocks`` in order, at tiny size, in a fresh folder laid out like a clone; checks that no
    shipped asset changed. Returns the clone and the commands run."""
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "configs").symlink_to(REPO_ROOT / "configs")
    shutil.copytree(REPO_ROOT / "assets", clone / "assets")  # commands may rewrite assets (the classifier block)
    monkeypatch.chdir(clone)
    monkeypatch.setattr("avid.checkpoint.REPO_ROOT", clone)  # nothing falls back to the repository's data or runs
    monkeypatch.setenv("AVID_TINY", "1")
    monkeypatch.delenv("AVID_WEIGHTS_DIR", raising=False)
    shipped = {p: p.stat().st_mtime_ns for p in (REPO_ROOT / "assets").rglob("*")}
    ran = []
    for b, block in enumerate(blocks, 1):
        for command in recorded_commands(block, tmp_path / "record"):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                run(command)
            except SystemExit as e:
                if e.code:
                    pytest.fail(f"README block {b}: `{' '.join(command)}` exited with {e.code}")
            ran.append(command)
            print(f"{time.perf_counter() - t0:6.1f} s ({time.process_time() - c0:5.1f} s CPU)  block {b}: "
                  f"{' '.join(command)[:120]}")  # CPU: the steadier figure on a shared machine
    assert {p: p.stat().st_mtime_ns for p in (REPO_ROOT / "assets").rglob("*")} == shipped
    return clone, ran


def test_every_readme_block_belongs_to_exactly_one_group():
    text = README.read_text()
    headings = [h for h, _ in sections(text)]
    for heads in GROUPS.values():  # a renamed heading would move its blocks to "main" unnoticed
        for head in heads:
            assert any(h.startswith(head) for h in headings), f"README has no section {head!r}"
    grouped = [b for g in (*GROUPS, "main") for b in group_blocks(g, text)]
    assert sorted(grouped) == sorted(bash_blocks(text))
    assert all(group_blocks(g, text) for g in (*GROUPS, "main"))


def test_every_readme_block_runs_in_order_at_tiny_size(tmp_path, monkeypatch):
    """The blocks of every section outside ``GROUPS``, in order (the other groups: their own files)."""
    blocks = group_blocks("main")
    assert len(blocks) >= 5
    clone, ran = run_blocks(blocks, tmp_path, monkeypatch)
    assert {c[1] for c in ran if c[0] == "avid"} >= {"quickstart", "data", "pretrain", "train", "sample", "eval",
                                                      "bench", "experiment", "classifier", "loss", "export"}
    # the quickstart report's README lists every file the report holds
    report = clone / "reports" / "quickstart"
    listed = re.findall(r"`([^`]+)`", (report / "README.md").read_text())
    for f in report.rglob("*"):
        if f.is_file() and f.name != LOCK_NAME:  # the writer's lock file stays, empty, by design
            name = str(f.relative_to(report))
            assert any(fnmatch(name, pattern.replace("<method>", "*")) for pattern in listed), name
