"""The house rules of docs/architecture.md: packages in floors (sfv_core < methods < sfv_fvd < sfv_train < bench <
sfv_lab), imports only downward, no import cycle between modules, no source file over 400 lines, a torch-free CLI."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ["sfv_core", "methods", "sfv_fvd", "sfv_train", "bench", "sfv_lab"]


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in FLOORS:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = f
    return mods


def _imports(name: str, path: Path, mods: dict) -> set[str]:
    """Project modules imported anywhere in the file (top level and inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods)
    return {m for m in out if m in mods}


def test_imports_only_run_down_and_have_no_cycles():
    mods = _modules()
    edges = {m: _imports(m, p, mods) - {m} for m, p in mods.items()}
    floor = {p: i for i, p in enumerate(FLOORS)}
    upward = [(a, b) for a, bs in edges.items() for b in bs if floor[b.split(".")[0]] > floor[a.split(".")[0]]]
    assert upward == []
    state, cycles = {}, []

    def visit(u, path):
        state[u] = "open"
        for v in edges[u]:
            if state.get(v) == "open":
                cycles.append(path[path.index(v):] + [v])
            elif v not in state:
                visit(v, path + [v])
        state[u] = "done"

    for m in mods:
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_source_file_over_400_lines():
    files = [*_modules().values(), *(ROOT / "benchmarks").glob("*.py")]     # the benchmark scripts too
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_cli_module_imports_no_torch():
    code = "import sys, bench.cli; print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr


def test_the_mini_world_variable_is_read_in_one_place_and_never_written():
    """The world a command uses travels as an argument (``mini_world``); ``$SFV_MINI_WORLD`` is only a user's
    pointer at another world, read once in methods/models/mini.py:mini_dir."""
    uses = {}
    for name, path in _modules().items():
        n = sum(isinstance(node, ast.Constant) and node.value == "SFV_MINI_WORLD"
                for node in ast.walk(ast.parse(path.read_text())))
        if n:
            uses[name] = n
    assert uses == {"methods.models.mini": 1}
    tree = ast.parse((ROOT / "methods" / "models" / "mini.py").read_text())
    calls = [node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and any(isinstance(a, ast.Constant) and a.value == "SFV_MINI_WORLD"
                                                            for a in node.args)]
    assert calls == ["get"]
