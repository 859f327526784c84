"""The package's shape, read from its imports: data flows one way through the pipeline's stages.

config -> data -> export -> train -> tune -> infer -> evaluate (export: the output formats a scoring
run writes from a scored season; it needs only data). Shared plumbing (errors, runtime, metrics,
model_file, run_layout, cli) sits beside the stages and imports only config and data; the tools (demo,
bench) may use everything and nothing in the pipeline uses them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "camtrap"

STAGES = ("config", "data", "export", "train", "tune", "infer", "evaluate")
PLUMBING = ("errors", "runtime", "metrics", "model_file", "run_layout", "cli", "console")
TOOLS = ("demo", "bench")
#: Lines of a module above which its size needs a reason (see the closing note of the layout issue).
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _area(module: str) -> str:
    """``camtrap.train.loop`` -> ``train``; ``camtrap.metrics`` -> ``metrics``; ``camtrap`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _camtrap_imports(path: Path) -> list[str]:
    """Every ``camtrap`` module this file imports, at module level or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "camtrap":
            if node.module == "camtrap":
                found += [f"camtrap.{a.name}" for a in node.names]
            else:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "camtrap"]
    return found


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _allowed(src: str, dst: str) -> bool:
    if dst in ("", src) or src in TOOLS:
        return True
    if dst in TOOLS:
        return False
    if src == "config":
        return False  # config imports nothing else of the package
    if src in PLUMBING:
        return dst in ("config", "data") or dst in PLUMBING
    if dst in PLUMBING:
        return True
    return STAGES.index(dst) <= STAGES.index(src)


def test_every_module_belongs_to_a_stage_plumbing_or_a_tool():
    areas = {_area(_module_name(p)) for p in _modules()}
    assert areas <= {"", *STAGES, *PLUMBING, *TOOLS}, areas - {"", *STAGES, *PLUMBING, *TOOLS}


def test_no_module_imports_a_later_stage_or_a_tool():
    wrong = []
    for path in _modules():
        src = _area(_module_name(path))
        for imported in _camtrap_imports(path):
            if not _allowed(src, _area(imported)):
                wrong.append(f"{_module_name(path)} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_the_rule_itself_refuses_backward_imports():
    """The checker would catch the mistakes it exists for."""
    assert not _allowed("config", "data")
    assert not _allowed("train", "infer")
    assert not _allowed("data", "train")
    assert not _allowed("evaluate", "bench")
    assert not _allowed("model_file", "train")
    assert not _allowed("export", "infer") and not _allowed("export", "train")
    assert _allowed("infer", "train") and _allowed("bench", "train") and _allowed("train", "metrics")


@pytest.mark.parametrize("module", ["camtrap.evaluate.report", "camtrap.evaluate.submission", "camtrap.evaluate.sweep",
                                    "camtrap.run_layout",
                                    "camtrap.model_file", "camtrap.config.recipe", "camtrap.data.frames",
                                    "camtrap.data.sequences", "camtrap.export"])
def test_torch_free_modules_do_not_import_torch(module):
    """Reading a submission or a run, validating a recipe and decoding frames for scoring never pay for
    torch (seconds and hundreds of MB per process)."""
    code = f"import sys, {module}; bad = sorted(m for m in ('torch', 'timm') if m in sys.modules); print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", f"{module} imports {out.stdout.strip()}"


def test_modules_stay_small():
    long = {
        _module_name(p): n for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
