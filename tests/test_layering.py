"""The dependency graph runs one way: data, nn, diffusion -> blackbox -> methods -> train -> rollout
-> metrics -> pipelines -> cli, with no cycles. Every ``import`` in ``src/avid`` (also those inside
functions and under ``TYPE_CHECKING``) is read with ``ast``; a module may import its own layer or
a lower one, never a higher one, and the module graph has no cycle."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A package prefix places every module under it; a new package must be placed here.
LAYERS: list[tuple[str, ...]] = [
    ("avid", "avid.options", "avid.locks", "avid.precision", "avid.tiny", "avid.errors", "avid.memory",
     "avid.cputime"),  # no avid imports
    ("avid.data", "avid.nn", "avid.diffusion", "avid.checkpoint", "avid.config"),
    ("avid.blackbox", "avid.whitebox"),
    ("avid.methods",),
    ("avid.train",),
    ("avid.rollout", "avid.envs"),
    ("avid.metrics",),
    ("avid.pipelines",),
    ("avid.cli", "avid.cli_options", "avid.cli_world"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "avid").rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The avid modules ``path`` imports (``from avid import tiny`` is ``avid.tiny``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "avid"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "avid":
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            out |= subs or {node.module}
    return out


def layer(module: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or (p != "avid" and module.startswith(p + "."))) and (best is None or len(p) > best[1]):
                best = (rank, len(p))
    if best is None:
        raise AssertionError(f"module {module} is in no layer: add it (or its package) to LAYERS in {__file__}")
    return best[0]


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def test_every_import_goes_down_the_layers():
    wrong = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
             for m, deps in graph().items() for d in sorted(deps) if layer(d) > layer(m)]
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycles():
    try:
        list(graphlib.TopologicalSorter(graph()).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_the_checker_sees_a_wrong_import_and_a_cycle(tmp_path):
    """The two checks fail when they should: metrics importing train, and two modules importing each other."""
    assert layer("avid.pipelines.classifier_train") > layer("avid.train.run")
    assert layer("avid.pipelines.experiment") == layer("avid.pipelines.experiment_report")
    a = tmp_path / "a.py"
    a.write_text("from avid.train import run\nfrom avid import tiny\n\ndef f():\n    import avid.metrics.frames\n")
    assert imports(a, {"avid.tiny", "avid.train"}) == {"avid.train", "avid.tiny", "avid.metrics.frames"}
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter({"x": {"y"}, "y": {"x"}}).static_order())


def test_no_code_outside_the_methods_compares_a_method_name():
    """What differs between methods is a class attribute: no ``name == "pretrain"``, no ``in ("base",
    ...)``, no table keyed by method names outside ``avid.methods``."""
    from avid.methods import REGISTRY

    def names(node) -> set[str]:
        items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return {n.value for n in items if isinstance(n, ast.Constant) and n.value in REGISTRY}

    def literal(node) -> bool:
        try:
            ast.literal_eval(node)
        except ValueError:
            return False
        return True

    wrong = []
    for m, path in modules().items():
        if m == "avid.methods" or m.startswith("avid.methods."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            found = set()
            if isinstance(node, ast.Compare):
                found = set().union(*(names(n) for n in [node.left, *node.comparators]))
            elif isinstance(node, ast.Dict):  # a table of properties: method names -> literals (rows of
                # results keyed by method, {"base": base_method}, are not)
                found = set().union(*(names(k) for k, v in zip(node.keys, node.values) if k is not None and literal(v)))
            if found:
                wrong.append(f"{m}:{node.lineno} {sorted(found)}")
    assert not wrong, "method names compared outside avid.methods:\n" + "\n".join(wrong)


def test_one_training_harness_builds_every_trainer():
    """Methods, the base model's pretraining and the action classifier all train through
    ``avid.train.harness``: no other module builds a Lightning ``Trainer``."""
    def builds_trainer(node) -> bool:
        return isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "Trainer"

    builders = {m for m, path in modules().items() if any(map(builds_trainer, ast.walk(ast.parse(path.read_text()))))}
    assert builders == {"avid.train.harness"}
