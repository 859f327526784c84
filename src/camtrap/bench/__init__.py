"""Benchmarks of the platform's jobs against the plain baseline a user would otherwise write.

Machines here are shared and noisy, so every figure is the median of several repetitions, and every
target is a ratio between the platform and its baseline measured in the same run on the same inputs.

* :func:`bench_prepare` (:mod:`.prepare`): the Ray Data preparation job vs a single PIL loop and
  ``multiprocessing.Pool``;
* :func:`bench_ingest` (:mod:`.ingest`): the training input pipeline with no model work vs a torch
  DataLoader on the same CPUs, with Ray Data's breakdown of where the consumer waited;
* :func:`bench_train` (:mod:`.train`): steady-state images/s of ``run_training`` (Ray Train) vs a plain
  PyTorch DDP loop;
* :func:`bench_predict` (:mod:`.predict`): images/s of ``infer.predict.predict`` (Ray Data) vs a plain
  single-process TTA loop, with the submissions checked equal;
* :func:`bench_memory` (:mod:`.memory`): peak RSS of the whole prepare and predict jobs on N and 10N
  images;
* :func:`bench_scale` (:mod:`.scale`): an epoch's start (compact table, object store, a rank's indices,
  its dataset and first batch) on a synthetic 7 M-row season vs a 100k-row one and a plain pandas loop.

Each returns a JSON-ready dict (timings, ratios, targets) and has a ``format_*`` that prints it;
:mod:`.common` holds what they share (timing, medians, the device and machine, shared inputs).
"""

from camtrap.bench.common import (
    TARGETS,
    Timing,
    check_device,
    machine_info,
    replicated_inputs,
    untrained_model_file,
    warm_up_ray,
)
from camtrap.bench.ingest import bench_ingest, format_ingest
from camtrap.bench.memory import JobMemorySampler, bench_memory, format_memory
from camtrap.bench.predict import bench_predict, format_predict, plain_predict
from camtrap.bench.prepare import bench_prepare, format_prepare
from camtrap.bench.scale import bench_scale, format_scale
from camtrap.bench.train import TrainSetup, bench_recipe, bench_train, format_train, train_setup

__all__ = [
    "TARGETS",
    "JobMemorySampler",
    "Timing",
    "TrainSetup",
    "bench_ingest",
    "bench_memory",
    "bench_predict",
    "bench_prepare",
    "bench_recipe",
    "bench_scale",
    "bench_train",
    "check_device",
    "format_ingest",
    "format_memory",
    "format_predict",
    "format_prepare",
    "format_scale",
    "format_train",
    "machine_info",
    "plain_predict",
    "replicated_inputs",
    "train_setup",
    "untrained_model_file",
    "warm_up_ray",
]
