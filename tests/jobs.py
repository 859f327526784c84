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


#: What a healthy job must not show on its console: Ray Train's report reprs, a C++ error line, DDP's
#: gradient-layout warning, deprecation warnings, Ray Data's progress blocks and INFO lines.
NOISE = ("TrainingReport(", "core_worker.cc", "Grad strides do not match", "DeprecationWarning",
         "Running Dataset", "Starting execution of Dataset", "logging_progress")


def assert_quiet(output: str) -> None:
    """``output`` (a job's console) carries none of :data:`NOISE`."""
    found = [n for n in NOISE if n in output]
    assert not found, (found, output[-6000:])
