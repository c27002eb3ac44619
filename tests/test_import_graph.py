"""The package's import graph, read from the source (every ``import``, at module level or inside a function):
no cycles, and no module imports from a layer below its own in GUIDE §1's order (data flows one way)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "diffusion_lab"

# GUIDE §1's layers, top first; a module may import from its own layer or the ones above it. The ground floor holds
# what every layer may use; checkpoint (storage of networks) sits between the networks and the procedures that save
# them; pretrained and reader_models load what the procedures made; the command line is the bottom.
LAYERS = [
    ("ground", {"errors", "checks", "profile", "glue"}),
    ("data", {"data"}),
    ("schedule", {"schedules"}),
    ("diffusion math", {"diffusion", "likelihood", "gaussian_mixture", "parameterization"}),
    ("networks", {"models", "baselines"}),
    ("storage", {"checkpoint"}),
    ("procedures", {"optim", "runtime", "train", "presets", "sampling", "guidance", "flow_matching"}),
    ("shipped models", {"pretrained", "reader_models"}),
    ("judgement", {"metrics"}),
    ("showing", {"widgets", "plotting", "diagrams"}),
    ("command line", {"__main__"}),
]
LAYER_OF = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: {package modules it imports}}`` for every module under ``root`` (the root package itself, which
    only re-exports, is left out; importing a submodule from outside its package counts as importing the package
    too, since that runs the package's ``__init__``)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    top = root.name
    graph = {}
    for mod, path in files.items():
        if mod == top:
            continue
        is_pkg = path.name == "__init__.py"
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[: len(base) - node.level + 1]
                    src = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = [src] + [f"{src}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                while t and t != top:
                    if t != mod and not mod.startswith(t + "."):     # a module's own package is already loaded
                        deps.add(t)
                    t = t.rpartition(".")[0]
        graph[mod] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by a depth-first search (each reported once, from its smallest member)."""
    cycles, seen = [], set()

    def visit(node, path, on_path):
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                cyc = path[path.index(nxt):]
                k = cyc.index(min(cyc))
                key = tuple(cyc[k:] + cyc[:k])
                if key not in seen:
                    seen.add(key)
                    cycles.append(list(key))
            elif nxt in graph:
                visit(nxt, path + [nxt], on_path | {nxt})

    for start in sorted(graph):
        visit(start, [start], {start})
    return cycles


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for mod, deps in graph.items():
        here = LAYER_OF.get(mod.split(".")[1])
        for dep in deps:
            there = LAYER_OF.get(dep.split(".")[1])
            if here is not None and there is not None and there > here:
                out.append(f"{mod} ({LAYERS[here][0]}) imports {dep} ({LAYERS[there][0]}), a layer below it")
    return sorted(out)


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    assert "diffusion_lab.sampling" in graph and "diffusion_lab.guidance" in graph["diffusion_lab.sampling"]
    assert "diffusion_lab.checks" in graph["diffusion_lab.models.layers"]         # `from .. import checks`
    assert "diffusion_lab.models" in graph["diffusion_lab.metrics"]               # a submodule's package counts
    # a cycle and a violation planted in a copy are found
    planted = {k: set(v) for k, v in graph.items()}
    planted["diffusion_lab.schedules"].add("diffusion_lab.sampling")
    assert any({"diffusion_lab.schedules", "diffusion_lab.sampling"} <= set(c) for c in find_cycles(planted))
    assert any(v.startswith("diffusion_lab.schedules (schedule) imports diffusion_lab.sampling")
               for v in layer_violations(planted))


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + c[:1]) for c in cycles)


def test_no_module_imports_from_a_layer_below_it():
    violations = layer_violations(import_graph())
    assert not violations, "\n".join(violations)


def test_the_shipped_models_do_not_import_the_trainer():
    """Loading a shipped or saved model needs no training code (issue 19): pretrained and reader_models import
    neither train nor anything that imports it."""
    graph = import_graph()

    def reach(mod, seen=None):
        seen = set() if seen is None else seen
        for dep in graph.get(mod, ()):
            if dep not in seen:
                seen.add(dep)
                reach(dep, seen)
        return seen

    for mod in ("diffusion_lab.pretrained", "diffusion_lab.reader_models", "diffusion_lab.checkpoint"):
        assert "diffusion_lab.train" not in reach(mod), f"{mod} reaches diffusion_lab.train"


def test_every_known_module_has_a_layer():
    tops = {m.split(".")[1] for m in import_graph()}
    # modules other branches are adding may arrive unlisted; these are the ones that must be placed
    mine = {"errors", "checks", "profile", "data", "schedules", "diffusion", "likelihood", "gaussian_mixture",
            "parameterization", "models", "checkpoint", "train", "sampling", "guidance", "pretrained", "reader_models",
            "metrics", "widgets", "__main__", "optim", "runtime"}
    assert mine <= tops and mine <= set(LAYER_OF)
