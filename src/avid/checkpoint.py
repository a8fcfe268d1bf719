"""Model files: a folder with ``model.safetensors`` (weights) and ``config.yaml`` (what built them).

Every trained model of the project, the shipped base model included, is such a folder. Loading
checks that the weights fit the configuration, so a checkpoint of another model fails clearly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from avid.data.storage import atomic_write, atomic_write_text, sha256
from avid.locks import LOCK_NAME, folder_lock

WEIGHTS, CONFIG = "model.safetensors", "config.yaml"
REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve(path: str | Path) -> Path:
    """A path as given, or else relative to the repository (for shipped assets and configs)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    return REPO_ROOT / p if (REPO_ROOT / p).exists() else p


def save_model(folder: str | Path, state: dict[str, torch.Tensor], config: dict[str, Any],
               dtype: torch.dtype | None = None) -> Path:
    folder = Path(folder)
    tensors = {k: (v.to(dtype) if dtype and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in state.items()}
    atomic_write(folder / WEIGHTS, lambda f: f.write(save(tensors)))
    atomic_write_text(folder / CONFIG, yaml.safe_dump(config, sort_keys=False))
    return folder


def load_config(folder: str | Path) -> dict[str, Any]:
    folder = resolve(folder)
    path = folder / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"no model at {folder}: missing {CONFIG}")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"corrupt model config {path}: {e}") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"model config {path} is not a mapping")
    return cfg


def require_keys(cfg: dict[str, Any], keys: tuple[str, ...], folder: str | Path) -> None:
    """A model's ``config.yaml`` must hold ``keys``: else one clear error, not a ``KeyError`` later."""
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise ValueError(f"{Path(folder) / CONFIG} lacks {missing} (written by another version of avid, or "
                         "edited?); re-export the model or restore the file")


def load_weights(folder: str | Path, module: torch.nn.Module, prefix: str = "") -> None:
    """Load ``model.safetensors`` into ``module`` strictly, in the module's own dtype."""
    folder = resolve(folder)
    path = folder / WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"no weights at {path}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"corrupt weights file {path}: {e}") from e
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path} holds non-finite weights (NaN or inf) in {len(bad)} of {len(state)} tensors, "
                         f"e.g. {bad[:3]}; the model is broken: retrain it or restore a good copy")
    own = module.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or extra or wrong:
        raise ValueError(
            f"{path} does not fit this model (a checkpoint of another model?): "
            f"{len(missing)} missing keys {missing[:3]}, {len(extra)} unexpected {extra[:3]}, "
            f"{len(wrong)} with other shapes {wrong[:3]}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


STORED_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def export_copy(run: str | Path, out: str | Path, dtype: str = "bf16") -> str:
    """``avid export``: a model folder copied to ``out`` for shipping, weights cast to ``dtype`` (a key
    of ``STORED_DTYPES``), the config recording it as ``stored_dtype``; a latent base model's codec
    (its subfolder named by ``codec:``) is copied the same way. Returns what was done."""
    src = resolve(run)
    cfg = load_config(src)
    sub = _codec_folder(cfg)
    with folder_lock(out):
        _check_export_target(Path(out), src, cfg.get("kind"), sub)
        save_model(out, load_file(str(src / WEIGHTS)), {**cfg, "stored_dtype": dtype}, dtype=STORED_DTYPES[dtype])
        if sub:
            save_model(Path(out) / sub, load_file(str(src / sub / WEIGHTS)),
                       {**load_config(src / sub), "stored_dtype": dtype}, dtype=STORED_DTYPES[dtype])
    codec = f", with its codec in {sub}/" if sub else ""
    return f"{src} -> {out} ({dtype} weights{codec}, config kind {cfg.get('kind')!r})"


def _codec_folder(cfg: dict[str, Any]) -> str | None:
    """The subfolder holding a latent base model's codec (its config's ``codec:`` names it; a codec's
    own config holds its network settings there, a mapping), else None."""
    return cfg["codec"] if isinstance(cfg.get("codec"), str) else None


def _check_export_target(out: Path, src: Path, kind: str | None, sub: str | None = None) -> None:
    """``out`` is new, empty, or an earlier ``avid export`` of a model of ``kind`` (with its codec
    subfolder ``sub``, if any): never the model itself, another model, a training run or a dataset."""
    refuse = f"export would overwrite it: choose a new or empty --out folder (this export is of kind {kind!r})"
    if out.resolve() == src.resolve():
        raise ValueError(f"--out {out} is the model folder being exported; {refuse}")
    entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME and not p.name.endswith(".tmp"))
    if not entries:
        return
    found = load_config(out) if (out / CONFIG).exists() else {}
    exported = {CONFIG, WEIGHTS} | ({sub} if sub else set())
    if set(entries) <= exported and "stored_dtype" in found and found.get("kind") == kind:
        return  # an earlier export of the same kind of model: replaced
    if found:
        made = "" if "stored_dtype" in found and set(entries) <= exported else ", not an `avid export` folder"
        raise ValueError(f"{out} holds a model of kind {found.get('kind')!r}{made}; {refuse}")
    raise ValueError(f"{out} holds files of its own ({', '.join(entries[:4])}{', ...' if len(entries) > 4 else ''}); "
                     f"{refuse}")
