"""The shape of the code (docs/architecture.md): capability folders, no import cycles, a UI
without torch, and every caller going through the dispatcher."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDIO = ROOT / "studio"
TOP_LEVEL = {"__init__", "config", "errors", "fields", "requests"}     # shared by every capability


def _modules() -> dict[str, Path]:
    out = {}
    for f in STUDIO.rglob("*.py"):
        rel = f.relative_to(ROOT).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    return out


def _top_level_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The studio modules `name` imports when it is imported (not inside functions)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        for n in (node.body if isinstance(node, ast.If) else [node]):     # TYPE_CHECKING counts
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


def test_modules_live_in_capability_folders():
    loose = sorted(f.stem for f in STUDIO.glob("*.py") if f.stem not in TOP_LEVEL)
    assert loose == [], f"modules outside a capability folder: {loose}"
    for folder in ("models", "prompts", "generation", "outputs", "serving", "ui", "train",
                   "api", "plots", "upscale", "outpaint", "animation", "finetune", "live", "workers"):
        assert (STUDIO / folder / "__init__.py").read_text().strip().startswith('"""'), folder


def test_no_import_cycles():
    modules = _modules()
    graph = {m: _top_level_imports(m, p, modules) for m, p in modules.items()}
    state: dict[str, int] = {}      # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:     # on the current path: a cycle
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


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
        assert "studio.run(" not in text and "generation.engine" not in text, f.name
    assert "studio.submit(" in (STUDIO / "ui" / "jobs.py").read_text()
    assert "studio.submit(" in (STUDIO / "serving" / "sequence.py").read_text()
    assert "Sequence(" in (STUDIO / "ui" / "jobs.py").read_text()
    assert "run_composed(" in (STUDIO / "ui" / "plots.py").read_text()
    assert "sequence.run(" in (STUDIO / "animation" / "render.py").read_text()
    assert "studio.submit(" in (STUDIO / "api" / "calls.py").read_text()
