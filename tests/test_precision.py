"""One place decides precision: bf16 only where the CPU runs it natively, fp32 elsewhere; every
override spelled one way; the choice recorded in what a run writes."""

import pytest
import torch

from avid import precision as P


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("AVID_CACHE_DIR", str(tmp_path / "cache"))
    cpu_static = P._cpu_static
    P.cpu_bf16_speedup.cache_clear()
    cpu_static.cache_clear()
    yield
    P.cpu_bf16_speedup.cache_clear()  # no measurement made under a fake CPU outlives the test
    cpu_static.cache_clear()


def fake_cpu(monkeypatch, capability: str, flags: list[str]):
    monkeypatch.setattr(P, "_cpu_static", lambda: {"model": "Test CPU", "capability": capability, "bf16_flags": flags})
    monkeypatch.setattr(P.torch.backends.cpu, "get_cpu_capability", lambda: capability)


def test_an_avx2_cpu_gets_fp32_without_measuring_anything(monkeypatch):
    fake_cpu(monkeypatch, "AVX2", [])
    monkeypatch.setattr(P, "_conv_seconds", lambda dtype, repeats=3: pytest.fail("nothing should be measured"))
    p = P.resolve_precision("auto")
    assert (p.name, p.dtype, p.lightning) == ("fp32", None, "32-true")
    assert "AVX2" in p.reason


def test_bf16_flags_that_pytorch_does_not_use_do_not_count(monkeypatch):
    # e.g. an AVX512-BF16 CPU with PyTorch's vector code limited to AVX2 (ATEN_CPU_CAPABILITY=avx2)
    fake_cpu(monkeypatch, "AVX2", ["avx512_bf16"])
    assert P.resolve_precision("auto").name == "fp32"


def test_a_native_bf16_cpu_gets_bf16_when_the_benchmark_agrees_and_caches_it(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, "AVX512", ["amx_bf16", "avx512_bf16"])
    calls = []

    def conv_seconds(dtype, repeats=3):
        calls.append(dtype)
        return 1.0 if dtype is None else 0.4  # bf16 2.5x faster

    monkeypatch.setattr(P, "_conv_seconds", conv_seconds)
    p = P.resolve_precision("auto")
    assert (p.name, p.dtype, p.lightning) == ("bf16", torch.bfloat16, "bf16-mixed")
    assert "2.5x" in p.reason and len(calls) == 2
    P.cpu_bf16_speedup.cache_clear()  # a new process: the measurement comes from the disk cache
    assert P.resolve_precision("auto").name == "bf16" and len(calls) == 2
    assert (tmp_path / "cache" / "precision.json").exists()


def test_a_cpu_whose_bf16_measures_slower_gets_fp32(monkeypatch):
    fake_cpu(monkeypatch, "AVX512", ["avx512_bf16"])
    monkeypatch.setattr(P, "_conv_seconds", lambda dtype, repeats=3: 1.0 if dtype is None else 3.0)
    p = P.resolve_precision("auto")
    assert p.name == "fp32" and "slower" in p.reason


def test_gpus_get_bf16_where_supported_else_fp16(monkeypatch):
    monkeypatch.setattr(P.torch.cuda, "is_bf16_supported", lambda: True)
    assert P.auto_precision("cuda").name == "bf16"
    monkeypatch.setattr(P.torch.cuda, "is_bf16_supported", lambda: False)
    assert P.auto_precision("cuda").lightning == "16-mixed"


@pytest.mark.parametrize("given,name", [("fp32", "fp32"), ("32-true", "fp32"), ("bf16", "bf16"),
                                        ("bf16-mixed", "bf16"), ("bfloat16", "bf16")])
def test_explicit_choices_and_lightning_names_override_auto(given, name):
    p = P.resolve_precision(given)
    assert p.name == name and p.reason == "requested"


def test_unknown_or_cpu_fp16_precisions_fail_clearly():
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        P.resolve_precision("fp8")
    with pytest.raises(ValueError, match="fp16 is for GPUs"):
        P.resolve_precision("fp16", "cpu")


def test_autocast_runs_bf16_only_when_chosen():
    lin, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
    with P.resolve_precision("bf16").autocast():
        assert lin(x).dtype == torch.bfloat16
    with P.resolve_precision("fp32").autocast():
        assert lin(x).dtype == torch.float32
