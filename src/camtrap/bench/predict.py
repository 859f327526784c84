"""The predict bench: Ray Data scoring (:func:`camtrap.infer.predict.predict`) vs a plain single-process
loop with the same flip TTA, on the same model and images, with the submissions checked equal; and the
Ray job again in the ``fast`` decode mode against both, with the pixel gap it costs beside its speed.

On CUDA also the plain loop a GPU user writes (:func:`loader_predict`: a ``DataLoader`` whose worker
processes decode, one process doing flip TTA under bf16 autocast in batches of 256, as
``../shared/gpu/plain_predict.py``), and the largest difference in any per-image probability between the
platform's autocast scoring and its float32 scoring of the same model on the same images.

The baselines are written apart from :mod:`camtrap.infer` on purpose: they are what a user would write,
and the equality check is only worth something if the two sides do not share their scoring code.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from camtrap.bench.common import (
    TARGETS,
    Timing,
    check_device,
    decode_gap,
    format_gap,
    ratio,
    replicated_inputs,
    require_ray_gpus,
    untrained_model_file,
    using_torch_threads,
)
from camtrap.bench.predict_baselines import loader_predict, loader_workers, plain_predict
from camtrap.data import storage
from camtrap.data.classes import FILE_NAME, SEQ_ID
from camtrap.data.contract import read_metadata
from camtrap.data.imageio import (
    DECODE_MODES,
    FAST_DECODE_MAX_MAD,
)
from camtrap.data.resume import PartLog
from camtrap.infer.actors import plan_actors, scoring_batch_size
from camtrap.infer.predictor import prob_column
from camtrap.infer.submission import FLOAT_FORMAT
from camtrap.run_layout import MODEL_FILE
from camtrap.runtime import cluster_view


def image_probabilities(work_dir: str) -> pd.DataFrame:
    """A scoring job's per-image probabilities (the first model's, views x classes flattened) by file name,
    from its work dir's Parquet parts; images that failed to decode left out."""
    from camtrap.infer.predict import PARTS_DIR

    done = PartLog(storage.join(work_dir, PARTS_DIR), key=FILE_NAME, columns=[]).read()
    done = done[[len(p) > 0 for p in done[prob_column(0)]]]
    return pd.DataFrame(np.stack(done[prob_column(0)].to_list()).astype(np.float64), index=done[FILE_NAME])


def probability_gap(work_a: str, work_b: str) -> dict[str, float]:
    """How far two scoring runs of the same model on the same images are apart, per image: ``max_abs_diff``,
    the largest absolute difference in any probability (any image, view, class); ``mean_abs_diff``."""
    a, b = image_probabilities(work_a), image_probabilities(work_b)
    common = a.index.intersection(b.index)
    delta = np.abs(a.loc[common].to_numpy() - b.loc[common].to_numpy())
    return {"images": len(common), "max_abs_diff": float(delta.max()) if delta.size else float("nan"),
            "mean_abs_diff": float(delta.mean()) if delta.size else float("nan")}


#: Images of a Snapshot Serengeti-sized season, the unit of the README's throughput sheet.
SEASON_IMAGES = 7_000_000


def predictor_threads(use_gpu: bool) -> int:
    """Torch threads of the platform's one-model predictor actor (``infer.predict.score_images``)."""
    return plan_actors(cluster_view(), 1, use_gpu).threads


def platform_amp(device: str) -> str:
    """What the platform's default ``--amp auto`` resolves to on ``device`` (this machine's first GPU)."""
    from camtrap.train.loop import auto_amp

    return auto_amp(torch.cuda.get_device_capability(0)) if device == "cuda" else "off"


def bench_predict(
    metadata: str, images_dir: str, model_path: str | None = None, long_side: int = 128, repeats: int = 3,
    batch_size: int | None = None, device: str = "cpu", rows_per_task: int = 64, scale: int = 4,
    arch: str = "resnet10t", amp_check: bool | None = None, decode_workers: int | None = None,
) -> dict[str, Any]:
    """Scoring images/s: :func:`camtrap.infer.predict.predict` vs :func:`plain_predict`, same model and images.

    Both are timed end to end from the call to the submission in memory (the platform's also writes
    its CSV and Parquet parts; the baseline writes its CSV too): model loading, decoding, resizing,
    forward + flip, aggregation. Ray is already running (a cluster is long-lived). The baseline runs
    with the torch threads of the platform's predictor actor; the platform also decodes in parallel
    Ray Data tasks, which is what it brings. Every platform run gets a fresh work dir, else it would
    resume and score nothing. ``batch_size`` None: the platform's own default for the device
    (:func:`camtrap.infer.actors.scoring_batch_size`), which the plain loops use too. The submissions must
    agree (max abs difference reported; < 1e-5 expected on CPU: only the batch an image ran in differs,
    which changes a convolution's last float32 bits), the platform's float32 scoring against the plain loop's.

    The Ray job runs a third time in ``fast`` decode (``ratio_fast``: its rate over the exact job's, the
    issue's target; ``fast_vs_plain``: over the exact plain loop's), on a model of the same weights that
    records ``fast`` (a given ``model_path`` is forced instead), with the decode's pixel gap reported.

    On CUDA the platform scores under its default autocast (``--amp auto``: bf16 from compute capability
    8.0) and a fourth side runs, :func:`loader_predict` (a DataLoader with ``decode_workers`` decode
    processes, default every CPU but one, + one process doing flip TTA in bf16, batch 256 unless
    ``batch_size``): ``ratio_bf16`` is the platform's rate over it. ``amp_check`` (default: on CUDA) adds one
    untimed platform run at the other precision (``--amp off`` on CUDA, ``--amp bf16`` on CPU) on the N
    images: ``amp_gap`` is the largest absolute difference in any per-image probability between the
    autocast and the float32 scoring, and ``amp_submission_max_abs_diff`` the same on the submissions.

    A job has a fixed start-up cost (the platform starts its actor and decode workers, each importing
    torch; both load the model) that a season of images amortises and a benchmark of a few hundred
    does not. So each side also runs on ``scale`` x N images (hard-linked copies): the *steady* rate
    is the extra images over the extra time, and the fixed cost what the N run spent beyond it.
    """
    from camtrap.infer.predict import predict

    check_device(device)
    use_gpu = device == "cuda"
    if use_gpu:
        require_ray_gpus(1)
    amp_check = use_gpu if amp_check is None else amp_check
    plain_batch = scoring_batch_size(device, batch_size)
    workers = loader_workers() if decode_workers is None else decode_workers
    n_images = len(read_metadata(metadata).frame)
    root = tempfile.mkdtemp(prefix="camtrap-bench-predict-")
    try:
        if model_path is None:  # the same seed: the same weights, recorded with each decode mode
            models = {mode: untrained_model_file(os.path.join(root, f"model_{mode}", MODEL_FILE), long_side, arch,
                                                 decode=mode) for mode in DECODE_MODES}
        else:
            models = dict.fromkeys(DECODE_MODES, model_path)
        threads = predictor_threads(use_gpu)
        small, large = replicated_inputs(metadata, images_dir, root, n_images, max(scale, 2))
        inputs = {"N": small, "xN": large}
        copies_dir = os.path.join(root, "images")
        subs: dict[tuple[str, str], pd.DataFrame] = {}

        def work_dir(side: str, size: str, r: int | str) -> str:
            return os.path.join(root, f"work_{side}_{size}_{r}")

        def platform_run(size: str, r: int | str, decode: str = "exact", amp: str = "auto",
                         side: str | None = None) -> None:
            side = side or ("platform" if decode == "exact" else "platform_fast")
            _, subs[side, size] = predict(
                [models[decode]], inputs[size], copies_dir, os.path.join(root, f"sub_{side}_{size}_{r}.csv"),
                work_dir=work_dir(side, size, r), batch_size=batch_size, use_gpu=use_gpu,
                rows_per_task=rows_per_task, decode=decode, force_decode=model_path is not None, amp=amp)

        def platform_fast_run(size: str, r: int) -> None:
            platform_run(size, r, "fast")

        def plain_run(size: str, r: int) -> None:
            frame = read_metadata(inputs[size]).frame
            with using_torch_threads(threads):
                subs["plain", size] = plain_predict(models["exact"], frame, copies_dir, plain_batch, device)
            subs["plain", size].to_csv(os.path.join(root, f"plain_{size}_{r}.csv"), index=False, float_format=FLOAT_FORMAT)
            _release_cuda_cache(device)

        def loader_run(size: str, r: int) -> None:
            frame = read_metadata(inputs[size]).frame
            subs["plain_bf16", size] = loader_predict(models["exact"], frame, copies_dir, plain_batch, workers, device,
                                                      amp="bf16")
            subs["plain_bf16", size].to_csv(os.path.join(root, f"plain_bf16_{size}_{r}.csv"), index=False,
                                            float_format=FLOAT_FORMAT)
            _release_cuda_cache(device)

        n_large = n_images * max(scale, 2)
        sides = [("plain", "plain loop (1 process)", plain_run), ("platform", "Ray Data predict job", platform_run),
                 ("platform_fast", "Ray Data job, fast decode", platform_fast_run)]
        if use_gpu:
            sides.append(("plain_bf16", f"plain DataLoader loop, bf16 ({workers} workers)", loader_run))
        timings = {(side, size): Timing(f"{label} ({size})", items=n_images if size == "N" else n_large)
                   for side, label, _ in sides for size in ("N", "xN")}
        for r in range(repeats):
            order = [(side, fn) for side, _, fn in sides]
            for size in ("N", "xN"):
                for side, fn in (order if r % 2 == 0 else order[::-1]):
                    start = time.perf_counter()
                    fn(size, r)
                    timings[side, size].seconds.append(time.perf_counter() - start)
        amp_gap, amp_sub_diff, other_amp = None, float("nan"), None
        fp32_side = "platform"
        if amp_check:  # the same model on the same N images at the other precision, untimed
            other_amp = "off" if use_gpu else "bf16"
            platform_run("N", "amp", amp=other_amp, side="platform_amp")
            amp_gap = probability_gap(work_dir("platform", "N", 0), work_dir("platform_amp", "N", "amp"))
            amp_sub = subs["platform_amp", "N"].set_index(SEQ_ID)
            base = subs["platform", "N"].set_index(SEQ_ID).loc[amp_sub.index, list(amp_sub.columns)]
            amp_sub_diff = float(np.abs(amp_sub.to_numpy(np.float64) - base.to_numpy(np.float64)).max())
            if use_gpu:
                fp32_side = "platform_amp"  # the platform's float32 scoring is the one to equal the fp32 plain loop
        got = subs[fp32_side, "N"].set_index(SEQ_ID)
        ref = subs["plain", "N"].set_index(SEQ_ID)
        same_rows = list(got.index) == list(ref.index)
        common = got.index.intersection(ref.index, sort=False)
        delta = got.loc[common].to_numpy(np.float64) - ref.loc[common, list(got.columns)].to_numpy(np.float64)
        diff = float(np.abs(delta).max()) if delta.size else float("nan")
        exact = subs["platform", "N"].set_index(SEQ_ID)
        fast_sub = subs["platform_fast", "N"].set_index(SEQ_ID).loc[exact.index, list(exact.columns)]
        fast_diff = float(np.abs(fast_sub.to_numpy(np.float64) - exact.to_numpy(np.float64)).max())
        gap = decode_gap(inputs["N"], copies_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def steady(side: str) -> tuple[float, float]:
        extra = timings[side, "xN"].median - timings[side, "N"].median
        rate = (n_large - n_images) / extra if extra > 0 else float("nan")
        return rate, timings[side, "N"].median - n_images / rate

    rates, fixed = {}, {}
    for side, _, _ in sides:
        rates[side], fixed[side] = steady(side)
    result = {
        "stage": "predict",
        "device": device,
        "images": n_images,
        "images_large": n_large,
        "sequences": len(got),
        "long_side": long_side,
        "arch": arch,
        "batch_size": plain_batch,
        "platform_amp": platform_amp(device),
        "torch_threads": threads,
        "repeats": repeats,
        "timings": [t.as_dict() for t in timings.values()],
        "ratio": ratio(timings["platform", "N"].rate, timings["plain", "N"].rate),
        "ratio_large": ratio(timings["platform", "xN"].rate, timings["plain", "xN"].rate),
        "steady_images_per_s": rates,
        "fixed_seconds": fixed,
        "ratio_steady": ratio(rates["platform"], rates["plain"]),
        "ratio_fast": ratio(timings["platform_fast", "N"].rate, timings["platform", "N"].rate),
        "ratio_fast_large": ratio(timings["platform_fast", "xN"].rate, timings["platform", "xN"].rate),
        "ratio_fast_steady": ratio(rates["platform_fast"], rates["platform"]),
        "fast_vs_plain": ratio(timings["platform_fast", "xN"].rate, timings["plain", "xN"].rate),
        "fast_max_abs_diff": fast_diff,
        "pixel_gap": gap,
        "targets": {"ratio": TARGETS["predict"], "max_abs_diff": 1e-5, "ratio_fast": 2.0,
                    "max_mad": FAST_DECODE_MAX_MAD, **({"ratio_bf16": 1.0} if use_gpu else {})},
        "same_sequences": same_rows,
        "max_abs_diff": diff,
        "max_abs_diff_sides": f"{fp32_side} vs plain (float32 both)",
        "amp_check": None if amp_gap is None else {"autocast": "bf16" if not use_gpu else platform_amp(device),
                                                   "float32": "off", "other_run_amp": other_amp, **amp_gap,
                                                   "submission_max_abs_diff": amp_sub_diff},
        "season_hours_per_actor": SEASON_IMAGES / rates["platform"] / 3600 if rates["platform"] > 0 else float("nan"),
    }
    if use_gpu:
        result |= {
            "loader_workers": workers,
            "ratio_bf16": ratio(timings["platform", "N"].rate, timings["plain_bf16", "N"].rate),
            "ratio_bf16_large": ratio(timings["platform", "xN"].rate, timings["plain_bf16", "xN"].rate),
            "ratio_bf16_steady": ratio(rates["platform"], rates["plain_bf16"]),
        }
    return result


def _release_cuda_cache(device: str) -> None:
    """Hand the plain loops' cached GPU memory back, so the platform's actor (another process) has it all."""
    if device == "cuda":
        torch.cuda.empty_cache()


def format_predict(result: dict[str, Any]) -> str:
    """The console summary of :func:`bench_predict`."""
    lines = [(f"predict ({result['device']}): {result['images']} and {result['images_large']} images, "
              f"{result['arch']} flip TTA at {result['long_side']} px, batch {result['batch_size']}, platform "
              f"autocast {result['platform_amp']}, {result['torch_threads']} torch thread(s), "
              f"median of {result['repeats']} runs")]
    for t in result["timings"]:
        lines.append(f"  {t['name']:<44} {t['items_per_s']:7.1f} img/s  ({t['median_s']:.2f} s)")
    steady, fixed = result["steady_images_per_s"], result["fixed_seconds"]
    lines.append(f"  steady (extra images / extra time): plain {steady['plain']:.1f} img/s, Ray {steady['platform']:.1f} "
                 f"img/s; fixed start-up: plain {fixed['plain']:.1f} s, Ray {fixed['platform']:.1f} s")
    lines.append(f"  Ray / plain = {result['ratio']:.2f}x on {result['images']}, {result['ratio_large']:.2f}x on "
                 f"{result['images_large']}, {result['ratio_steady']:.2f}x steady (target >= {result['targets']['ratio']})")
    if "ratio_bf16" in result:
        lines.append(f"  Ray / plain DataLoader bf16 loop = {result['ratio_bf16']:.2f}x on {result['images']}, "
                     f"{result['ratio_bf16_large']:.2f}x on {result['images_large']}, {result['ratio_bf16_steady']:.2f}x "
                     f"steady (target >= {result['targets']['ratio_bf16']}); that loop steady "
                     f"{steady['plain_bf16']:.1f} img/s, start-up {fixed['plain_bf16']:.1f} s")
    lines.append(f"  submissions: same sequences {result['same_sequences']}, max abs diff {result['max_abs_diff']:.2e} "
                 f"({result['max_abs_diff_sides']}; must be < {result['targets']['max_abs_diff']:g})")
    amp = result["amp_check"]
    if amp is not None:
        lines.append(f"  autocast {amp['autocast']} vs float32, same model and {amp['images']} images: largest difference "
                     f"in any probability {amp['max_abs_diff']:.2e} (mean {amp['mean_abs_diff']:.2e}); submissions "
                     f"{amp['submission_max_abs_diff']:.2e}")
    lines.append(f"  fast decode: Ray fast / Ray exact = {result['ratio_fast']:.2f}x on {result['images']}, "
                 f"{result['ratio_fast_large']:.2f}x on {result['images_large']}, {result['ratio_fast_steady']:.2f}x "
                 f"steady (target >= {result['targets']['ratio_fast']}); Ray fast / plain exact = "
                 f"{result['fast_vs_plain']:.2f}x on {result['images_large']}")
    lines.append(f"  {format_gap(result['pixel_gap'])}; submission max abs diff fast vs exact "
                 f"{result['fast_max_abs_diff']:.2e}")
    lines.append(f"  throughput sheet: a {SEASON_IMAGES / 1e6:g} M-image season at the steady rate takes "
                 f"{result['season_hours_per_actor']:.1f} actor-hours for this one model (README: Offline scoring)")
    return "\n".join(lines)
