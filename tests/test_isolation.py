"""The black box for real: from a method without parameter access, nothing reaches the base model.

The walk follows every reference the interpreter knows (``gc.get_referents``): attributes, private
and name-mangled ones, ``__dict__`` and slots, containers, functions' closures and their cells,
default arguments, bound methods, partials, classes. It does not enter modules or their globals
(which lead to every object of the program, this test's included). Positive controls show that
the same walk finds a network held the way the old local backend held it (in a closure), or in a
partial or a bound method.
"""

import functools
import gc
import sys
import types

import pytest
import torch

from avid.blackbox import Denoiser
from avid.config import load_run_config
from avid.methods import REGISTRY, build_method
from avid.train import build_context
from avid.whitebox import load_base_model
from tests.conftest import K, TINY_UNET

BLACK_BOX_METHODS = sorted(name for name, cls in REGISTRY.items() if not cls.needs_parameters)
OPTIONS = {"base": {}, "classifier-guidance": {"unet": TINY_UNET, "hidden": 16}}
META = {"action_kind": "discrete", "num_actions": 5, "frame_size": 16}


def reach(root) -> list:
    """Every object reachable from ``root`` (see the module docstring)."""
    module_dicts = {id(m.__dict__) for m in list(sys.modules.values()) if m is not None}
    seen, stack = {}, [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, types.ModuleType) or id(obj) in module_dicts:
            continue
        seen[id(obj)] = obj
        stack.extend(gc.get_referents(obj))
    return list(seen.values())


def base_tensors_found(objects, base_state: dict[str, torch.Tensor]) -> list[str]:
    """Names of base parameters whose values some reached tensor holds (same shape, equal values).
    Constant ones (a fresh norm layer's ones and zeros, which any network has) are not evidence."""
    tensors = [o for o in objects if isinstance(o, torch.Tensor)]
    return [k for k, p in base_state.items() if p.numel() > 1 and p.min() != p.max()
            and any(t.shape == p.shape and t.dtype == p.dtype and torch.equal(t, p) for t in tensors)]


def context_for(base, name):
    cfg = load_run_config(None, [f"base={base}", f"method.name={name}", f"data.cond_frames={K}"])
    return build_context(cfg, META, precision="fp32")


@pytest.mark.parametrize("name", BLACK_BOX_METHODS)
def test_a_full_graph_walk_from_a_black_box_method_finds_no_base_module_parameter_or_path(tiny_base, name):
    ctx = context_for(tiny_base, name)
    method = build_method(name, ctx, OPTIONS.get(name, {"unet": TINY_UNET}))
    base_net, _ = load_base_model(tiny_base)
    reached = reach(method)
    ids = {id(o) for o in reached}
    assert id(ctx.base) in ids and isinstance(ctx.base, Denoiser)  # it holds the black box ...
    assert any(type(o).__name__ == "WorkerBackend" for o in reached)  # ... and the walk went inside it
    own = {id(m) for m in method.modules()}
    foreign = [type(o).__name__ for o in reached if isinstance(o, torch.nn.Module) and id(o) not in own]
    assert foreign == []  # no module but the method's own
    assert base_tensors_found(reached, base_net.state_dict()) == []  # no tensor holding a base weight
    assert ctx.base_path is None  # the weights' path is never given ...
    folder = str(tiny_base)
    assert not [o for o in reached if isinstance(o, str) and folder in o]  # ... nor held anywhere


def test_the_walk_finds_a_network_in_a_closure_a_partial_or_a_bound_method(tiny_base):
    """Positive controls: how the network used to be held (a closure), and two other hiding places."""
    net, _ = load_base_model(tiny_base)
    state = net.state_dict()

    def predict(x_i, i, first):
        return net(x_i, i)

    holders = {"closure": types.SimpleNamespace(_Denoiser__fn=predict),
               "partial": types.SimpleNamespace(fn=functools.partial(torch.nn.Module.__call__, net)),
               "bound method": types.SimpleNamespace(fn=net.forward)}
    for kind, holder in holders.items():
        reached = reach(holder)
        assert any(o is net for o in reached), kind
        assert len(base_tensors_found(reached, state)) == sum(p.numel() > 1 and p.min() != p.max()
                                                             for p in state.values()), kind


@pytest.mark.parametrize("name", ["controlnet", "finetune"])
def test_only_methods_marked_as_needing_parameters_are_given_the_folder(tiny_base, name):
    assert context_for(tiny_base, name).base_path == str(tiny_base)
