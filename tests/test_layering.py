"""The package's layering (README, "Layout"): a module imports only from its own layer or the ones below it, and
the modules' top-level imports have no cycle. Checked on the source with `ast`, so a lazy import inside a
function counts too (it is still a dependency); only `if TYPE_CHECKING:` blocks are exempt."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "adaptive_decoder"

# lowest first; a module may import from its own layer and every layer before it
LAYERS = [
    {"paths", "storage", "validation", "stats", "configs", "plotting"},
    {"modeling"},
    {"integrations"},  # vLLM: the served model and the sampling backend need only modeling
    {"rewards", "tasks", "scoring"},  # scoring: the scored-sampling engine of collection, evaluation, HAG search
    {"methods", "hag"},
    {"lpo"},
    {"evaluation"},
    {"experiment"},
    {"sweeps"},  # operations tooling over LPO runs: reads their logs, imports no method
    {"cli"},  # the `adaptive-decoder` command: one recipe per subcommand
]


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its top-level name {top!r} is in no layer of tests/test_layering.py")


def module_of(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def imports(path: Path, source: str | None = None) -> list[tuple[str, int, bool]]:
    """(imported adaptive_decoder module, line, at module top level) for every import in `path`."""
    tree = ast.parse(path.read_text() if source is None else source)
    skip = _type_checking_lines(tree)
    mod = module_of(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                name = ".".join([*base[: len(base) - (node.level - 1)], *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            if not name.startswith("adaptive_decoder"):
                continue
            targets = [name]
            if node.module is None:  # `from . import a`: a may be a submodule
                targets = []
                for a in node.names:
                    sub = PKG.parent / f"{name}.{a.name}".replace(".", "/")
                    targets.append(f"{name}.{a.name}" if sub.with_suffix(".py").exists() or sub.is_dir() else name)
            out += [(t, node.lineno, id(node) in top_level) for t in targets]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top_level) for a in node.names if a.name.startswith("adaptive_decoder")]
    return out


def violations(path: Path, source: str | None = None) -> list[tuple[str, int]]:
    mine = layer_of(module_of(path))
    return [(name, line) for name, line, _ in imports(path, source) if name != "adaptive_decoder" and layer_of(name) > mine]


FILES = sorted(p for p in PKG.rglob("*.py") if p != PKG / "__init__.py")


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_no_import_from_a_higher_layer(path):
    bad = violations(path)
    assert not bad, f"{path.relative_to(PKG.parent)} (layer {layer_of(module_of(path))}) imports from higher layers: {bad}"


def test_no_top_level_import_cycle():
    graph = {}
    for p in FILES:
        graph[module_of(p)] = {n for n, _, top in imports(p) if top and n != module_of(p)}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            # importing a.b.c runs a/__init__ and a/b/__init__ first: those are edges too
            for dep in [".".join(n.split(".")[:i]) for i in range(2, n.count(".") + 2)]:
                if dep not in graph or dep == m or m.startswith(dep + "."):  # its own package: already importing
                    continue
                if state.get(dep) == "open":
                    cycle = stack[stack.index(dep):] + [dep]
                    raise AssertionError("import cycle: " + " -> ".join(cycle))
                if dep not in state:
                    visit(dep)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_checker_sees_a_violation():
    # the rule must be able to fail: a modeling module importing the experiment pipeline, even lazily, is caught
    src = "import torch\n\ndef f():\n    from ..experiment.pipeline import run_experiment\n"
    assert violations(PKG / "modeling" / "head.py", src) == [("adaptive_decoder.experiment.pipeline", 4)]
    assert violations(PKG / "experiment" / "pipeline.py", "from ..modeling.head import AdaptiveDecoderHead\n") == []


def test_report_imports_nothing_from_the_experiment():
    """evaluation/report renders the dicts results.json and summary.json hold: it names no experiment type, not even
    for type checking (the layers above allow what TYPE_CHECKING imports; this does not)."""
    for path in sorted((PKG / "evaluation" / "report").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [n for n in names if "experiment" in n.split(".")], path
