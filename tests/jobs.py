"""Load a ``ray_jobs/<name>.py`` script as a module, so tests call its ``main(argv)`` in-process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_job(name: str) -> ModuleType:
    jobs = str(REPO / "ray_jobs")
    if jobs not in sys.path:
        sys.path.insert(0, jobs)  # the scripts import their _bootstrap module
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "ray_jobs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
