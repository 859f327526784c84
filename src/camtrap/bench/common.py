"""What every benchmark shares: timing, medians and ratios, the device and machine, and shared inputs.

Machines here are shared and noisy, so every figure is the median of several repetitions, and every
target is a ratio between the platform and its baseline measured in the same run on the same inputs.
The helpers here exist so that each bench measures, summarises and labels its figures the same way.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import psutil
import torch

from camtrap.data import storage
from camtrap.data.classes import COMPETITION_CLASSES, FILE_NAME, SEQ_ID
from camtrap.data.contract import read_metadata
from camtrap.data.imageio import FAST_DECODE_MAX_MAD, PREPARE_LONG_SIDE, ImageDecodeError, load_resized
from camtrap.errors import InputError
from camtrap.model_file import save_model_file

#: What each bench aims for; printed beside every ratio and written to the results JSON.
TARGETS = {"train": 0.9, "predict": 0.9, "memory": 1.2}


# ------------------------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Wall times of one variant's repetitions over the same ``items``; reported by their median."""

    name: str
    seconds: list[float] = field(default_factory=list)
    items: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.items / self.median

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "items": self.items, "seconds": self.seconds, "median_s": self.median,
                "items_per_s": self.rate}


def time_repeats(name: str, items: int, repeats: int, fn: Callable[[int], None]) -> Timing:
    """Call ``fn(repeat)`` ``repeats`` times, timing each call on its own."""
    t = Timing(name, items=items)
    for r in range(repeats):
        start = time.perf_counter()
        fn(r)
        t.seconds.append(time.perf_counter() - start)
    return t


def median(values: list[float]) -> float:
    """The median, or NaN for no values (a side with no runs reports NaN rather than failing)."""
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN where ``b`` is not positive: a ratio over a zero time is not a measurement."""
    return a / b if b > 0 else float("nan")


@contextlib.contextmanager
def using_torch_threads(threads: int) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)``, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------- device, machine


def check_device(device: str) -> None:
    """Refuse ``cuda`` where torch cannot use a GPU: a CUDA bench would otherwise measure the CPU."""
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device: must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"--device cuda: CUDA is not available on this machine (torch {torch.__version__}, built for "
            f"CUDA {torch.version.cuda or 'none'}: torch.cuda.is_available() is False); "
            "run on a GPU machine or use --device cpu"
        )


def require_ray_gpus(needed: int) -> None:
    """A Ray without enough GPUs would leave GPU actors pending forever: fail with the numbers instead."""
    import ray

    have = int(ray.cluster_resources().get("GPU", 0))
    if have < needed:
        raise InputError(f"--device cuda: this bench needs {needed} GPU(s) in Ray, the cluster has {have}")


class GpuSampler:
    """The GPUs' SM use (NVML, through ``nvidia-ml-py``'s ``pynvml``), sampled in a thread while a bench side
    runs: what ``nvidia-smi dmon`` shows, beside the side's images/s.

    A context manager; :meth:`summary` gives the sample count, the mean SM use over all samples and over
    the busy ones (SM > 0). Without NVML (no GPU, or the package missing) it samples nothing and says why.
    """

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.samples: list[float] = []
        self.unavailable: str | None = None
        self._stop = None
        self._thread = None

    def __enter__(self) -> GpuSampler:
        import threading

        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as e:  # noqa: BLE001 - ImportError, or NVMLError where there is no driver
            self.unavailable = f"no NVML ({type(e).__name__}: {e})"
            return self
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(self.interval_s):
                self.samples.append(sum(pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles) / len(handles))

        self._thread = threading.Thread(target=sample, name="gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()

    def summary(self) -> dict[str, Any]:
        busy = [v for v in self.samples if v > 0]
        return {"samples": len(self.samples), "interval_s": self.interval_s,
                "mean_sm_percent": float(np.mean(self.samples)) if self.samples else float("nan"),
                "busy_mean_sm_percent": float(np.mean(busy)) if busy else float("nan"),
                **({"unavailable": self.unavailable} if self.unavailable else {})}


def format_gpu_use(name: str, summary: dict[str, Any]) -> str:
    """One console line of a :meth:`GpuSampler.summary`."""
    if "unavailable" in summary:
        return f"  GPU SM use, {name}: {summary['unavailable']}"
    return (f"  GPU SM use, {name}: {summary['mean_sm_percent']:.0f}% mean over the run, "
            f"{summary['busy_mean_sm_percent']:.0f}% in busy samples ({summary['samples']} samples)")


def _identity(batch):
    return batch


def warm_up_ray() -> None:
    """One trivial Ray Data execution, not timed: it starts what a long-lived cluster already runs (Ray
    Data's system actors, a worker with Ray Data imported), so the first timed job does not pay for it."""
    import ray

    ray.data.range(8, override_num_blocks=2).map_batches(_identity).take_all()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """The ``machine`` block of the results: what the figures were measured on, and when."""
    import ray

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "ray_cpus": ray.cluster_resources().get("CPU") if ray.is_initialized() else None,
        "torch_threads_driver": torch.get_num_threads(),
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else _cpu_model(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "platform": platform.platform(),
    }
    info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    return info


# ------------------------------------------------------------------------------ inputs (predict, memory)


def untrained_model_file(path: str, long_side: int, arch: str = "resnet10t", seed: int = 0,
                         decode: str = "exact") -> str:
    """A ``model.pt`` with random weights and priors, as ``train.py`` writes one: scoring costs the same.
    ``decode``: the mode it claims to be trained in (the same ``seed`` gives the same weights in both)."""
    from camtrap.train.augment import IMAGENET_MEAN, IMAGENET_STD
    from camtrap.train.models import create_classifier

    torch.manual_seed(seed)
    model = create_classifier(arch, num_classes=len(COMPETITION_CLASSES))
    priors = np.random.default_rng(seed).uniform(0.01, 0.3, len(COMPETITION_CLASSES))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_model_file(path, model.state_dict(), {"model": arch, "name": "bench"}, COMPETITION_CLASSES, priors,
                    long_side, IMAGENET_MEAN, IMAGENET_STD, decode=decode)
    return path


def decode_gap(metadata: str, images_dir: str, long_side: int = PREPARE_LONG_SIDE) -> dict[str, float]:
    """The pixel gap of ``fast`` against ``exact`` on a bench's own images, printed beside its speed.

    Both modes decode every file of ``metadata`` to ``long_side`` with the preparation rule (before any
    JPEG re-encoding, so the gap is the decode's alone). ``mad``: the mean over images of each image's
    mean absolute difference; ``worst_mad``: the largest image's; ``max_diff``: the largest single
    difference, in 8-bit levels. Files that fail to decode are left out (they fail in both modes).
    """
    mads, worst = [], 0
    for name in read_metadata(metadata).frame[FILE_NAME]:
        try:
            data = storage.read_bytes(storage.join(images_dir, str(name)))
            exact, _ = load_resized(data, long_side)
        except (ImageDecodeError, OSError):
            continue
        fast, _ = load_resized(data, long_side, decode="fast")
        diff = np.abs(np.asarray(fast, np.int16) - np.asarray(exact, np.int16))
        mads.append(float(diff.mean()))
        worst = max(worst, int(diff.max()))
    return {"images": len(mads), "mad": float(np.mean(mads)) if mads else float("nan"),
            "worst_mad": max(mads, default=float("nan")), "max_diff": worst}


def format_gap(gap: dict[str, float]) -> str:
    """One line for :func:`decode_gap`."""
    return (f"fast vs exact pixels ({gap['images']} images): MAD {gap['mad']:.2f} (worst image {gap['worst_mad']:.2f}, "
            f"target <= {FAST_DECODE_MAX_MAD}), max abs difference {gap['max_diff']}")


def replicated_inputs(metadata: str, images_dir: str, out_dir: str, images: int, copies: int) -> list[str]:
    """Metadata CSVs of ``images``, ``2 * images``, ... up to ``copies * images`` rows over the same files.

    The first ``images`` rows of ``metadata`` are hard-linked (copied where links fail) ``copies``
    times under ``out_dir/images/c<k>/`` with sequence ids ``c<k>_<seq_id>``, so the 10N run reads
    ten times the files without generating them; the N run is the first copy. Returns the paths of
    the N and the ``copies`` x N metadata files, and the images folder is ``out_dir/images``.
    """
    frame = read_metadata(metadata).frame[[SEQ_ID, FILE_NAME]].head(images)
    parts = []
    for k in range(copies):
        prefix = f"c{k}"
        for name in frame[FILE_NAME]:
            dst = os.path.join(out_dir, "images", prefix, name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            src = os.path.join(images_dir, name)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        parts.append(frame.assign(**{SEQ_ID: prefix + "_" + frame[SEQ_ID].astype(str),
                                     FILE_NAME: prefix + "/" + frame[FILE_NAME].astype(str)}))
    paths = []
    for n, name in ((1, "metadata_n.csv"), (copies, "metadata_many.csv")):
        path = os.path.join(out_dir, name)
        pd.concat(parts[:n]).to_csv(path, index=False)
        paths.append(path)
    return paths
