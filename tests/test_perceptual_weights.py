"""Weight files: the registry, where they are looked for, checksums, and exact layout checks."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch
from torch import nn

from avid.metrics.weights import (ENV_VAR, WEIGHTS, WeightSpec, WeightsMismatch, WeightsNotFound, find_all,
                                  find_weights, load_exact, verify)


def test_registry_checksums_are_full_sha256_and_agree_with_hub_file_names():
    for spec in WEIGHTS.values():
        assert spec.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", spec.sha256), spec.name
    # torch.hub names files "<name>-<first hex digits of the sha256>.pth"
    for name in ("vgg16", "inception_fid"):
        suffix = re.search(r"-([0-9a-f]{8})\.pth$", WEIGHTS[name].filename).group(1)
        assert WEIGHTS[name].sha256.startswith(suffix)
    assert WEIGHTS["i3d_rgb"].sha256 is None and WEIGHTS["i3d_torchscript"].sha256 is None


def test_lookup_order_argument_then_env_then_cwd(tmp_path, monkeypatch):
    name = WEIGHTS["i3d_rgb"].filename  # no known checksum: any bytes do
    for d in ("arg", "env", "cwd/weights"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert find_weights("i3d_rgb").parent.resolve() == (tmp_path / "cwd/weights").resolve()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert find_weights("i3d_rgb").parent == tmp_path / "env"
    assert find_weights("i3d_rgb", tmp_path / "arg").parent == tmp_path / "arg"


def test_missing_file_names_file_and_folder(tmp_path):
    with pytest.raises(WeightsNotFound) as err:
        find_weights("inception_fid", tmp_path)
    assert isinstance(err.value, FileNotFoundError)
    assert err.value.short == f"weights not found: pt_inception-2015-12-05-6726825d.pth in {tmp_path.resolve()}"
    assert "pytorch-fid" in str(err.value)  # says where to get it


def test_files_used_together_name_every_absent_one(tmp_path):
    with pytest.raises(WeightsNotFound) as err:
        find_all(["vgg16", "lpips_vgg"], tmp_path)
    assert err.value.short == f"weights not found: vgg16-397923af.pth, vgg.pth in {tmp_path.resolve()}"
    (tmp_path / "vgg16-397923af.pth").write_bytes(b"x")  # one present: only the other is named
    with pytest.raises(WeightsNotFound) as err:
        find_all(["vgg16", "lpips_vgg"], tmp_path, check=False)
    assert err.value.file == "vgg.pth" and "LPIPS" in str(err.value)


def test_checksum_mismatch_is_a_clear_value_error(tmp_path):
    (tmp_path / "vgg.pth").write_bytes(b"not the LPIPS heads")
    with pytest.raises(ValueError, match="SHA-256") as err:
        find_weights("lpips_vgg", tmp_path)
    assert isinstance(err.value, WeightsMismatch) and "vgg.pth" in str(err.value)
    assert find_weights("lpips_vgg", tmp_path, check=False) == tmp_path / "vgg.pth"


def test_checksum_match_passes(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"published bytes")
    verify(path, WeightSpec("w", "w.pth", hashlib.sha256(b"published bytes").hexdigest(), "test"))
    with pytest.raises(WeightsMismatch):
        verify(path, WeightSpec("w", "w.pth", hashlib.sha256(b"other").hexdigest(), "test"))


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_load_exact_accepts_old_files_without_num_batches_tracked():
    src, dst = _net(), _net()
    nn.init.normal_(src[0].weight)
    state = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_exact(dst, state, "old.pth")
    assert torch.equal(dst[0].weight, src[0].weight)


def test_load_exact_names_wrong_keys_and_shapes():
    state = _net().state_dict()
    state["0.kernel"] = state.pop("0.weight")
    with pytest.raises(WeightsMismatch, match=r"bad\.pth.*missing keys: 0\.weight.*unexpected keys: 0\.kernel"):
        load_exact(_net(), state, "bad.pth")
    state = _net().state_dict()
    state["1.bias"] = torch.zeros(5)
    with pytest.raises(WeightsMismatch, match=r"shape mismatches: 1\.bias: file \(5,\) vs model \(4,\)"):
        load_exact(_net(), state, "bad.pth")
