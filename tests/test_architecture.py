"""The shape of the code (docs/architecture.md): capability folders on floors, imports that only
go down a floor (read at the top of a module and inside functions alike), no import cycles, a UI
without torch, and every caller going through the dispatcher."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUDIO = ROOT / "studio"
TOP_LEVEL = {"__init__", "config", "errors", "fields", "inputs", "samplers"}     # the ground floor's modules

# Each package's floor: a module imports from its own floor or below, never above.
FLOORS: dict[str, int] = {
    # ground: what every capability shares (errors, settings, fields and requests, the samplers table,
    # decoding what users send)
    "studio": 0, "studio.errors": 0, "studio.config": 0, "studio.fields": 0, "studio.inputs": 0,
    "studio.samplers": 0, "studio.requests": 0,
    # low: models and their add-ons, the model families, prompts, the outputs folder and metadata
    "studio.models": 1, "studio.families": 1, "studio.prompts": 1, "studio.outputs": 1, "studio.control": 1,
    "studio.face_restoration": 1,
    # the engine: one request's stages
    "studio.generation": 2,
    # serving: the dispatcher, its backends (in-process and Ray workers), the Studio callers get
    "studio.serving": 3, "studio.workers": 3,
    # tools: callers that compose requests
    "studio.plots": 4, "studio.upscale": 4, "studio.outpaint": 4, "studio.animation": 4, "studio.live": 4,
    "studio.finetune": 4, "studio.detailer": 4,
    # faces: the web UI and the REST API
    "studio.ui": 5, "studio.api": 5,
}
FLOOR_NAMES = ("ground", "low", "engine", "serving", "tools", "faces")


def _modules(root: Path = STUDIO) -> dict[str, Path]:
    out = {}
    for f in root.rglob("*.py"):
        rel = f.relative_to(root.parent).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    return out


def imports(name: str, path: Path, modules: dict[str, Path], *, inside_functions: bool = True) -> set[str]:
    """The studio modules `name` imports: at its top level, and (by default) inside functions too."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    if inside_functions:
        nodes = list(ast.walk(tree))
    else:
        nodes = [n for node in tree.body for n in (node.body if isinstance(node, ast.If) else [node])]
    found = set()
    for n in nodes:
        if isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                parts = package.split(".")[: len(package.split(".")) - n.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in n.names}
        elif isinstance(n, ast.Import):
            found |= {a.name for a in n.names}
    # importing studio.a.b runs studio/a/__init__.py first: parent packages count too, except the
    # importer's own (a package's __init__ importing its modules is the usual pattern)
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    found |= {".".join(m.split(".")[:i]) for m in found for i in range(2, m.count(".") + 1)} - own
    return {m for m in found if m in modules and m != name}


def floor(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in FLOORS:
            return FLOORS[".".join(parts[:i])]
    raise AssertionError(f"{module} is on no floor: add its package to FLOORS")


def upward_imports(modules: dict[str, Path]) -> list[str]:
    out = []
    for m, path in sorted(modules.items()):
        for dep in sorted(imports(m, path, modules)):
            if floor(dep) > floor(m):
                out.append(f"{m} ({FLOOR_NAMES[floor(m)]}) -> {dep} ({FLOOR_NAMES[floor(dep)]})")
    return out


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every import cycle found by a depth-first walk (one per back edge)."""
    state: dict[str, int] = {}      # 1 = on the current path, 2 = done
    found = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:     # on the current path: a cycle
                found.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_modules_live_in_capability_folders():
    loose = sorted(f.stem for f in STUDIO.glob("*.py") if f.stem not in TOP_LEVEL)
    assert loose == [], f"modules outside a capability folder: {loose}"
    for package in FLOORS:
        folder = STUDIO.parent.joinpath(*package.split("."))
        if package != "studio" and folder.is_dir():
            assert (folder / "__init__.py").read_text().strip().startswith('"""'), package
    packages = {f"studio.{p.name}" for p in STUDIO.iterdir() if (p / "__init__.py").is_file()}
    assert packages <= set(FLOORS), f"packages on no floor: {sorted(packages - set(FLOORS))}"


def test_imports_go_down_a_floor_never_up():
    modules = _modules()
    assert upward_imports(modules) == []


def test_no_import_cycles_not_even_through_imports_inside_functions():
    modules = _modules()
    assert cycles({m: imports(m, p, modules) for m, p in modules.items()}) == []


def test_the_product_never_imports_the_embedded_models_training():
    for path in [*STUDIO.rglob("*.py"), ROOT / "app.py"]:
        tree = ast.parse(path.read_text())
        for n in ast.walk(tree):
            names = ([n.module or ""] if isinstance(n, ast.ImportFrom) else
                     [a.name for a in n.names] if isinstance(n, ast.Import) else [])
            assert not any(x == "embedded" or x.startswith("embedded.") for x in names), path


@pytest.mark.parametrize("planted, where", [
    ("from studio.ui.jobs import who", "studio/generation/plan.py"),      # the engine reaching up to the UI
    ("def f():\n    from studio.serving.studio import Studio\n", "studio/models/library.py"),  # inside a function
])
def test_the_check_catches_a_planted_upward_import(tmp_path, planted, where):
    """A copy of the package with one upward import planted: the check must name it."""
    import shutil
    copy = tmp_path / "studio"
    shutil.copytree(STUDIO, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / Path(where).relative_to("studio")
    target.write_text(target.read_text() + "\n" + planted + "\n")
    found = upward_imports(_modules(copy))
    planted_in = where[:-3].replace("/", ".")
    assert found and all(f.startswith(planted_in + " ") for f in found), found


def test_a_planted_cycle_is_found(tmp_path):
    import shutil
    copy = tmp_path / "studio"
    shutil.copytree(STUDIO, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "errors.py").write_text((copy / "errors.py").read_text() + "\ndef f():\n    import studio.fields\n")
    (copy / "fields.py").write_text((copy / "fields.py").read_text() + "\nimport studio.errors\n")
    modules = _modules(copy)
    assert any("studio.errors" in c and "studio.fields" in c
               for c in cycles({m: imports(m, p, modules) for m, p in modules.items()}))


def test_callers_ask_the_studio_and_do_not_reach_into_it():
    """Tabs, the APIs and the tools ask the Studio (models, names, submit, stop, save...); its
    parts (`local`), its dispatcher and its backend are the serving floor's. The LoRA trainer
    trains the very weights its own in-process studio draws samples with: it alone holds them."""
    import re
    reach = re.compile(r"\bstudio\.(local|dispatcher|backend|manager|library|outputs|presets|content_filter)\b"
                       r"(?!\.(metadata|pnginfo|folder|index)\b)")
    allowed = {STUDIO / "finetune" / "trainer.py"}
    for path in STUDIO.rglob("*.py"):
        if path.parent.name in ("serving", "workers") or path in allowed:
            continue
        found = [line.strip() for line in path.read_text().splitlines()
                 if reach.search(line) and not re.match(r"\s*(from|import)\s", line)]
        assert found == [], f"{path.relative_to(ROOT)} reaches into the Studio: {found}"


def test_the_ui_the_rest_api_the_plots_and_the_dispatcher_import_no_torch_or_diffusers():
    code = ("import sys, studio.ui, studio.serving.studio, studio.serving.dispatcher, studio.requests, "
            "studio.api.routes, studio.outputs.pnginfo, studio.plots.plot, studio.serving.sequence, "
            "studio.upscale.hires, studio.animation.start, studio.animation.render, studio.workers.backend; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_tabs_and_the_rest_api_submit_to_the_dispatcher_and_never_run_the_engine():
    for f in [*(STUDIO / "ui").glob("*.py"), *(STUDIO / "api").glob("*.py"), *(STUDIO / "plots").glob("*.py"),
              *(STUDIO / "upscale").glob("*.py"), *(STUDIO / "outpaint").glob("*.py"),
              *(STUDIO / "animation").glob("*.py")]:
        text = f.read_text()
        assert "studio.run(" not in text and ".local.run(" not in text and "generation.engine" not in text, f.name
    assert "studio.submit(" in (STUDIO / "ui" / "jobs.py").read_text()
    assert "studio.submit(" in (STUDIO / "serving" / "sequence.py").read_text()
    assert "Sequence(" in (STUDIO / "ui" / "jobs.py").read_text()
    assert "run_composed(" in (STUDIO / "ui" / "plots.py").read_text()
    assert "sequence.run(" in (STUDIO / "animation" / "render.py").read_text()
    assert "studio.submit(" in (STUDIO / "api" / "calls.py").read_text()
