"""The import graph: inference never imports the trainer, and train/ has no import circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
RUNTIME = SRC / "difflab" / "runtime"
ENV = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, deferred imports inside functions included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_no_runtime_source_imports_train():
    files = sorted(RUNTIME.rglob("*.py"))
    assert len(files) >= 5
    bad = {module_name(f): sorted(m for m in imports(f) if m.split(".")[:2] == ["difflab", "train"])
           for f in files}
    assert not any(bad.values()), bad


def test_importing_every_runtime_module_loads_nothing_of_train():
    names = [module_name(f) for f in sorted(RUNTIME.rglob("*.py"))]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.startswith('difflab.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=ENV, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_train_modules_import_each_other_without_a_circle():
    # the package's __init__ re-exports its modules; the circle in question is between modules
    train = {module_name(f): f for f in (SRC / "difflab" / "train").glob("*.py")
             if f.name != "__init__.py"}
    graph = {name: {m for m in imports(f) if m in train and m != name}  # deferred ones too
             for name, f in train.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start] - seen:
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
        return False

    circles = [name for name in graph if reaches(name, name, set())]
    assert not circles, {n: sorted(graph[n]) for n in circles}


def test_loading_and_sampling_a_checkpoint_imports_nothing_of_train(digits_run):
    code = ("import sys\nfrom difflab.runtime import SampleConfig, load\n"
            f"load({str(digits_run.path)!r}).generate(['3'], [0], SampleConfig(steps=2, "
            "precision='fp32'))\n"
            "print(sorted(m for m in sys.modules if m.startswith('difflab.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=ENV, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
