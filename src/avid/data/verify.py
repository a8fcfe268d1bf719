"""Checking and repairing a dataset folder (``avid data verify [--repair]``).

``verify`` reads every shard the index lists: present, of the recorded size and SHA-256, readable,
with the frame count of the index and the frame size of the metadata; it also lists ``.npz`` files
the index does not know (left by a killed or concurrent writer). ``repair`` removes what is damaged
from the folder and the index and regenerates it when the metadata says how (Procgen and robot datasets);
other datasets are left to the command that made them, which regenerates whatever is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avid.data.storage import INDEX, EpisodeStore, ShardError, clean_temp, sha256
from avid.locks import check_not_busy, folder_lock


@dataclass
class Problem:
    file: str  # relative to the dataset folder
    why: str
    in_index: bool = True


def check_shard(store: EpisodeStore, shard: dict) -> str | None:
    """Why ``shard`` cannot be used, or None when it is intact."""
    path = store.root / shard["file"]
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size == 0:
        return "empty file"
    if "bytes" in shard and size != shard["bytes"]:
        return f"{size} bytes, the index says {shard['bytes']}"
    if "sha256" in shard and sha256(path) != shard["sha256"]:
        return "garbled (SHA-256 differs from the index)"
    try:
        store.load_shard(shard)
    except ShardError as e:
        return e.reason
    return None


def verify(root: str | Path) -> tuple[EpisodeStore, list[Problem]]:
    """The dataset at ``root`` and everything wrong with its shards (empty when all are intact);
    ``FolderBusy`` while another process writes it."""
    check_not_busy(root)
    store = EpisodeStore(root)
    problems = [Problem(s["file"], why) for s in store.shards if (why := check_shard(store, s))]
    known = {s["file"] for s in store.shards}
    problems += [Problem(p.name, "not in the index (left by an interrupted or concurrent writer)", in_index=False)
                 for p in sorted(store.root.glob("*.npz")) if p.name not in known]
    return store, problems


def _generator(source: str | None):
    """``(generate, spec type)`` of the generator that made datasets of ``source``, None for data it
    cannot remake (imported, or written by other code)."""
    if source == "procgen":
        from avid.data.procgen import ProcgenSpec, generate

        return generate, ProcgenSpec
    if source == "robot":
        from avid.data.robot import RobotSpec, generate

        return generate, RobotSpec
    return None


def repair(root: str | Path, progress: bool = True) -> tuple[list[Problem], str]:
    """Remove damaged and unindexed shards and regenerate them where the metadata says how.
    Returns the problems found and one line saying what was done."""
    with folder_lock(root):
        store, problems = verify(root)
        clean_temp(store.root)
        if not problems:
            return problems, f"{len(store.shards)} shards intact; nothing to repair"
        bad = {p.file for p in problems}
        for file in bad:
            (store.root / file).unlink(missing_ok=True)
        store.index["shards"] = [s for s in store.shards if s["file"] not in bad]
        store.save_index()
        missing = sum(p.in_index for p in problems)
        regenerate = _generator(store.meta.get("source"))
        if regenerate is not None:
            generate, spec_type = regenerate
            generate(spec_type.from_meta(store.meta), str(store.root), progress=progress)
            return problems, f"removed {len(bad)} bad file(s) and regenerated {missing} shard(s)"
        return problems, (f"removed {len(bad)} bad file(s) from {store.root} and its {INDEX}; rerun the command "
                          f"that made the dataset to regenerate the {missing} missing shard(s)")
