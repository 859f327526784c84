"""The predict bench: Ray Data scoring (:func:`camtrap.infer.predict.predict`) vs a plain single-process
loop with the same flip TTA, on the same model and images, with the submissions checked equal; and the
Ray job again in the ``fast`` decode mode against both, with the pixel gap it costs beside its speed.

The baseline (:func:`plain_predict`) is written apart from :mod:`camtrap.infer` on purpose: it is what
a user would write in one process, and the equality check is only worth something if the two sides
do not share their scoring code.
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
from camtrap.data import storage
from camtrap.data.classes import FILE_NAME, SEQ_ID
from camtrap.data.contract import read_metadata
from camtrap.data.imageio import (
    DECODE_MODES,
    FAST_DECODE_MAX_MAD,
    PREPARE_LONG_SIDE,
    ImageDecodeError,
    load_resized,
    resize_long_side,
)
from camtrap.infer.actors import plan_actors
from camtrap.infer.submission import FLOAT_FORMAT, SUBMISSION_EPS
from camtrap.metrics import EPS
from camtrap.run_layout import MODEL_FILE
from camtrap.runtime import cluster_view
from camtrap.train.models import load_trained


def plain_predict(model_path: str, frame: pd.DataFrame, images_dir: str, batch_size: int = 16,
                  device: str = "cpu") -> pd.DataFrame:
    """The baseline a user would write in one process, written apart from :mod:`camtrap.infer.predict`.

    Per batch of ``batch_size`` rows: decode with the preparation rule (long side 512, as
    ``frames.decode_batch``), resize to the model's inference long side (as ``FlipTTAPredictor``),
    normalise, forward the images of each size together with their horizontal flips, sigmoid. Then
    the geometric mean over a sequence's images x flips, clipped as the submission is. Returns one row
    per ``seq_id`` (metadata order; a sequence with no decodable image gets the priors), the model's
    class columns. Runs at fp32, as the platform's predictor does.
    """
    model, meta = load_trained(model_path, device)
    classes = list(meta["classes"])
    mean = torch.tensor(meta["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"], device=device).view(1, 3, 1, 1)
    long_side = int(meta["inference_long_side"])
    rows = list(zip(frame[FILE_NAME], frame[SEQ_ID]))
    seq_of_view, views = [], []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            by_size: dict[tuple, list] = {}
            for name, seq in rows[start:start + batch_size]:
                try:
                    img, _ = load_resized(storage.read_bytes(storage.join(images_dir, str(name))), PREPARE_LONG_SIDE)
                except (ImageDecodeError, OSError):
                    continue
                arr = np.asarray(resize_long_side(img, long_side))
                by_size.setdefault(arr.shape, []).append((seq, arr))
            for items in by_size.values():
                x = torch.from_numpy(np.stack([a for _, a in items])).to(device)
                x = (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
                p = torch.sigmoid(model(torch.cat([x, torch.flip(x, dims=(3,))]))).float().cpu().numpy()
                n = len(items)
                for k, (seq, _) in enumerate(items):
                    seq_of_view += [seq, seq]
                    views += [p[k], p[n + k]]
    logs = pd.DataFrame(np.log(np.maximum(np.asarray(views, dtype=np.float64).reshape(-1, len(classes)), EPS)),
                        columns=classes)
    gmean = np.exp(logs.groupby(pd.Index(seq_of_view, name=SEQ_ID), sort=False).mean())
    order = list(dict.fromkeys(frame[SEQ_ID]))
    sub = gmean.reindex(order)
    missing = sub.isna().any(axis=1)
    sub.loc[missing] = np.asarray(meta["priors"], dtype=np.float64)
    return sub.clip(SUBMISSION_EPS, 1 - SUBMISSION_EPS).reset_index()


#: Images of a Snapshot Serengeti-sized season, the unit of the README's throughput sheet.
SEASON_IMAGES = 7_000_000


def predictor_threads(use_gpu: bool) -> int:
    """Torch threads of the platform's one-model predictor actor (``infer.predict.score_images``)."""
    return plan_actors(cluster_view(), 1, use_gpu).threads


def bench_predict(
    metadata: str, images_dir: str, model_path: str | None = None, long_side: int = 128, repeats: int = 3,
    batch_size: int = 16, device: str = "cpu", rows_per_task: int = 64, scale: int = 4, arch: str = "resnet10t",
) -> dict[str, Any]:
    """Scoring images/s: :func:`camtrap.infer.predict.predict` vs :func:`plain_predict`, same model and images.

    Both are timed end to end from the call to the submission in memory (the platform's also writes
    its CSV and Parquet parts; the baseline writes its CSV too): model loading, decoding, resizing,
    forward + flip, aggregation. Ray is already running (a cluster is long-lived). The baseline runs
    with the torch threads of the platform's predictor actor; the platform also decodes in parallel
    Ray Data tasks, which is what it brings. Every platform run gets a fresh work dir, else it would
    resume and score nothing. The submissions must agree (max abs difference reported; < 1e-5 expected:
    only the batch an image ran in differs, which changes a convolution's last float32 bits).

    The Ray job runs a third time in ``fast`` decode (``ratio_fast``: its rate over the exact job's, the
    issue's target; ``fast_vs_plain``: over the exact plain loop's), on a model of the same weights that
    records ``fast`` (a given ``model_path`` is forced instead), with the decode's pixel gap reported.

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

        def platform_run(size: str, r: int, decode: str = "exact") -> None:
            side = "platform" if decode == "exact" else "platform_fast"
            _, subs[side, size] = predict(
                [models[decode]], inputs[size], copies_dir, os.path.join(root, f"sub_{side}_{size}_{r}.csv"),
                work_dir=os.path.join(root, f"work_{side}_{size}_{r}"), batch_size=batch_size, use_gpu=use_gpu,
                rows_per_task=rows_per_task, decode=decode, force_decode=model_path is not None)

        def platform_fast_run(size: str, r: int) -> None:
            platform_run(size, r, "fast")

        def plain_run(size: str, r: int) -> None:
            frame = read_metadata(inputs[size]).frame
            with using_torch_threads(threads):
                subs["plain", size] = plain_predict(models["exact"], frame, copies_dir, batch_size, device)
            subs["plain", size].to_csv(os.path.join(root, f"plain_{size}_{r}.csv"), index=False, float_format=FLOAT_FORMAT)

        n_large = n_images * max(scale, 2)
        timings = {(side, size): Timing(f"{label} ({size})", items=n_images if size == "N" else n_large)
                   for side, label in (("plain", "plain loop (1 process)"), ("platform", "Ray Data predict job"),
                                       ("platform_fast", "Ray Data job, fast decode"))
                   for size in ("N", "xN")}
        for r in range(repeats):
            order = [("plain", plain_run), ("platform", platform_run), ("platform_fast", platform_fast_run)]
            for size in ("N", "xN"):
                for side, fn in (order if r % 2 == 0 else order[::-1]):
                    start = time.perf_counter()
                    fn(size, r)
                    timings[side, size].seconds.append(time.perf_counter() - start)
        got = subs["platform", "N"].set_index(SEQ_ID)
        ref = subs["plain", "N"].set_index(SEQ_ID)
        same_rows = list(got.index) == list(ref.index)
        common = got.index.intersection(ref.index, sort=False)
        delta = got.loc[common].to_numpy(np.float64) - ref.loc[common, list(got.columns)].to_numpy(np.float64)
        diff = float(np.abs(delta).max()) if delta.size else float("nan")
        fast_sub = subs["platform_fast", "N"].set_index(SEQ_ID).loc[got.index, list(got.columns)]
        fast_diff = float(np.abs(fast_sub.to_numpy(np.float64) - got.to_numpy(np.float64)).max())
        gap = decode_gap(inputs["N"], copies_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def steady(side: str) -> tuple[float, float]:
        extra = timings[side, "xN"].median - timings[side, "N"].median
        rate = (n_large - n_images) / extra if extra > 0 else float("nan")
        return rate, timings[side, "N"].median - n_images / rate

    (plain_rate, plain_fixed), (platform_rate, platform_fixed) = steady("plain"), steady("platform")
    fast_rate, fast_fixed = steady("platform_fast")
    return {
        "stage": "predict",
        "device": device,
        "images": n_images,
        "images_large": n_large,
        "sequences": len(got),
        "long_side": long_side,
        "arch": arch,
        "batch_size": batch_size,
        "torch_threads": threads,
        "repeats": repeats,
        "timings": [t.as_dict() for t in timings.values()],
        "ratio": ratio(timings["platform", "N"].rate, timings["plain", "N"].rate),
        "ratio_large": ratio(timings["platform", "xN"].rate, timings["plain", "xN"].rate),
        "steady_images_per_s": {"plain": plain_rate, "platform": platform_rate, "platform_fast": fast_rate},
        "fixed_seconds": {"plain": plain_fixed, "platform": platform_fixed, "platform_fast": fast_fixed},
        "ratio_steady": ratio(platform_rate, plain_rate),
        "ratio_fast": ratio(timings["platform_fast", "N"].rate, timings["platform", "N"].rate),
        "ratio_fast_large": ratio(timings["platform_fast", "xN"].rate, timings["platform", "xN"].rate),
        "ratio_fast_steady": ratio(fast_rate, platform_rate),
        "fast_vs_plain": ratio(timings["platform_fast", "xN"].rate, timings["plain", "xN"].rate),
        "fast_max_abs_diff": fast_diff,
        "pixel_gap": gap,
        "targets": {"ratio": TARGETS["predict"], "max_abs_diff": 1e-5, "ratio_fast": 2.0,
                    "max_mad": FAST_DECODE_MAX_MAD},
        "same_sequences": same_rows,
        "max_abs_diff": diff,
        "season_hours_per_actor": SEASON_IMAGES / platform_rate / 3600 if platform_rate > 0 else float("nan"),
    }


def format_predict(result: dict[str, Any]) -> str:
    """The console summary of :func:`bench_predict`."""
    lines = [(f"predict ({result['device']}): {result['images']} and {result['images_large']} images, "
              f"{result['arch']} flip TTA at {result['long_side']} px, {result['torch_threads']} torch thread(s), "
              f"median of {result['repeats']} runs")]
    for t in result["timings"]:
        lines.append(f"  {t['name']:<34} {t['items_per_s']:7.1f} img/s  ({t['median_s']:.2f} s)")
    steady, fixed = result["steady_images_per_s"], result["fixed_seconds"]
    lines.append(f"  steady (extra images / extra time): plain {steady['plain']:.1f} img/s, Ray {steady['platform']:.1f} "
                 f"img/s; fixed start-up: plain {fixed['plain']:.1f} s, Ray {fixed['platform']:.1f} s")
    lines.append(f"  Ray / plain = {result['ratio']:.2f}x on {result['images']}, {result['ratio_large']:.2f}x on "
                 f"{result['images_large']}, {result['ratio_steady']:.2f}x steady (target >= {result['targets']['ratio']})")
    lines.append(f"  submissions: same sequences {result['same_sequences']}, max abs diff {result['max_abs_diff']:.2e} "
                 f"(must be < {result['targets']['max_abs_diff']:g})")
    lines.append(f"  fast decode: Ray fast / Ray exact = {result['ratio_fast']:.2f}x on {result['images']}, "
                 f"{result['ratio_fast_large']:.2f}x on {result['images_large']}, {result['ratio_fast_steady']:.2f}x "
                 f"steady (target >= {result['targets']['ratio_fast']}); Ray fast / plain exact = "
                 f"{result['fast_vs_plain']:.2f}x on {result['images_large']}")
    lines.append(f"  {format_gap(result['pixel_gap'])}; submission max abs diff fast vs exact "
                 f"{result['fast_max_abs_diff']:.2e}")
    lines.append(f"  throughput sheet: a {SEASON_IMAGES / 1e6:g} M-image season at the steady rate takes "
                 f"{result['season_hours_per_actor']:.1f} actor-hours for this one model (README: Offline scoring)")
    return "\n".join(lines)

