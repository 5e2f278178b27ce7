"""The package layout is the pipeline: platform <- stages (in flow order) <- ops, no import cycles, and every
``jobs/*.py`` entry point is a thin call of its stage's ``main``."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

from shopformer.ops.jobs import JOB_MODULES

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "lib" / "shopformer"
PLATFORM = {
    "cli",
    "config",
    "errors",
    "progress",
    "redact",
    "registry",
    "schemas",
    "settings",
    "spark",
    "tables",
}
STAGES = ["synthetic", "ingest", "sessions", "features", "model", "scoring"]  # the data's flow
# Imports that cross a layer on purpose, each for a reason stated where it happens.
ALLOWED = {("registry", "model.pyfunc")}  # unpickles models registered under the old module path


def _module(path: Path) -> str:
    rel = path.relative_to(LIB).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """shopformer modules ``path`` imports (``from shopformer.x import y`` counts y when y is a module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("shopformer"):
            base = node.module.removeprefix("shopformer").lstrip(".")
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                found.add(sub if (LIB / f"{sub.replace('.', '/')}.py").exists() else base)
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("shopformer.") for a in node.names if a.name.startswith("shopformer.")
            }
    return {f for f in found if f}


def _layer(module: str) -> int:
    top = module.split(".")[0]
    if top in PLATFORM:
        return 0
    if top in STAGES:
        return 1 + STAGES.index(top)
    assert top == "ops", f"{module}: not platform, a stage or ops"
    return 1 + len(STAGES)


MODULES = {_module(p): p for p in LIB.rglob("*.py")}


def test_ls_shows_the_platform_and_the_stages() -> None:
    entries = {p.stem if p.is_file() else p.name for p in LIB.iterdir() if p.name != "__pycache__"}
    assert entries == PLATFORM | set(STAGES) | {"ops", "__init__"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_later_layer(module: str) -> None:
    later = [
        dep
        for dep in _imports(MODULES[module], top_level_only=False)
        if _layer(dep) > _layer(module) and (module, dep) not in ALLOWED
    ]
    assert not later, f"{module} (layer {_layer(module)}) imports {later}"


def test_no_import_cycle() -> None:
    graph = {m: _imports(p, top_level_only=True) & set(MODULES) for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*trail, node, dep])
            if dep not in state:
                visit(dep, [*trail, node])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_every_entry_point_calls_its_stage_main() -> None:
    scripts = {p.stem: p.read_text() for p in (REPO / "jobs").glob("*.py")}
    assert set(scripts) == set(JOB_MODULES)
    for job, text in scripts.items():
        assert f'sys.exit(cli.entry("{JOB_MODULES[job]}"))' in text, job
        assert len(text.splitlines()) <= 15, f"jobs/{job}.py should stay a few lines"


def test_models_pickled_under_the_old_registry_path_still_load() -> None:
    from shopformer.model.pyfunc import ShopformerPyfunc

    # What cloudpickle wrote for versions registered before the layout: a reference by module path.
    old = b"\x80\x02cshopformer.registry\nShopformerPyfunc\nq\x00."
    assert pickle.loads(old) is ShopformerPyfunc
