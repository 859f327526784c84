"""Smoke tests of the train, predict and memory benchmarks on tiny inputs: structure and sanity, not speed."""

from __future__ import annotations

import json
import math
import os

import pytest

from camtrap.bench import (
    JobMemorySampler,
    bench_memory,
    bench_predict,
    bench_prepare,
    bench_recipe,
    bench_scale,
    bench_train,
    check_device,
    format_memory,
    format_predict,
    format_prepare,
    format_scale,
    format_train,
    machine_info,
)
from camtrap.demo import SMALL_SIZES, make_demo_dataset
from camtrap.errors import InputError


def positive_finite(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """16 sequences of small frames (4:3 and 16:9): 28 training-season images."""
    root = tmp_path_factory.mktemp("bench")
    summary = make_demo_dataset(root / "data", num_sequences=16, seed=0, image_sizes=SMALL_SIZES)
    return summary


@pytest.mark.timeout(240)
def test_train_bench_runs_both_sides_on_the_same_work(ray_session, tiny):
    # Training reads raw images as well as prepared ones; these are small already.
    result = bench_train(str(tiny.train_metadata), str(tiny.train_labels), str(tiny.images_dir),
                         repeats=1, long_side=64, epochs=2, batch_size=4)
    assert result["workers"] == 2 and result["epochs"] == 2 and result["steps_per_epoch"] >= 1
    for side in (result["platform"], result["baseline"]):
        (run,) = side["runs"]
        assert [e["epoch"] for e in run["epochs"]] == [1, 2]
        assert all(positive_finite(e["images_per_s"]) for e in run["epochs"])
        # The steady figure counts epoch 2 only: the same number of images on both sides.
        assert side["steady_images"] == [2 * 4 * result["steps_per_epoch"]]
        assert positive_finite(side["median_steady_images_per_s"]) and positive_finite(side["median_total_s"])
    assert positive_finite(result["ratio"]) and positive_finite(result["total_time_ratio"])
    assert result["targets"] == {"ratio": 0.9}
    assert "target >= 0.9" in format_train(result)
    json.dumps(result)


@pytest.mark.timeout(180)
def test_predict_bench_matches_the_plain_loop(ray_session, tiny):
    result = bench_predict(str(tiny.train_metadata), str(tiny.images_dir), long_side=64, repeats=1, batch_size=4,
                           scale=2, amp_check=True)
    assert result["images"] == tiny.num_train_images and result["images_large"] == 2 * tiny.num_train_images
    assert [t["name"] for t in result["timings"]] == ["plain loop (1 process) (N)", "plain loop (1 process) (xN)",
                                                      "Ray Data predict job (N)", "Ray Data predict job (xN)",
                                                      "Ray Data job, fast decode (N)", "Ray Data job, fast decode (xN)"]
    assert all(positive_finite(t["items_per_s"]) for t in result["timings"])
    assert positive_finite(result["ratio"]) and positive_finite(result["ratio_large"])
    assert positive_finite(result["ratio_fast"]) and positive_finite(result["fast_vs_plain"])
    gap = result["pixel_gap"]
    assert gap["images"] == tiny.num_train_images and 0 <= gap["mad"] <= gap["worst_mad"] <= gap["max_diff"]
    assert "fast vs exact pixels" in format_predict(result) and "target >= 2.0" in format_predict(result)
    assert result["same_sequences"] and result["max_abs_diff"] < 1e-5
    assert "target >= 0.9" in format_predict(result) and "throughput sheet: a 7 M-image season" in format_predict(result)
    rate = result["steady_images_per_s"]["platform"]
    assert result["season_hours_per_actor"] == pytest.approx(7e6 / rate / 3600, nan_ok=True)
    assert result["arch"] == "resnet10t"
    assert result["batch_size"] == 4 and result["platform_amp"] == "off" and "ratio_bf16" not in result  # CPU
    # bf16 autocast against float32 scoring of the same model and images (on CPU only when asked): a real
    # difference, and a small one.
    amp = result["amp_check"]
    assert amp["images"] == tiny.num_train_images and amp["other_run_amp"] == "bf16"
    assert 0 < amp["mean_abs_diff"] <= amp["max_abs_diff"] < 0.05 and amp["submission_max_abs_diff"] < 0.05
    assert "autocast bf16 vs float32" in format_predict(result)
    json.dumps(result)


@pytest.mark.timeout(120)
def test_the_plain_dataloader_loop_scores_as_the_plain_loop(ray_session, tiny):
    from camtrap.bench import plain_predict, untrained_model_file
    from camtrap.bench.predict_baselines import loader_predict
    from camtrap.data.contract import read_metadata

    frame = read_metadata(str(tiny.train_metadata)).frame
    model = untrained_model_file(os.path.join(os.path.dirname(str(tiny.train_metadata)), "loader", "model.pt"), 64)
    plain = plain_predict(model, frame, str(tiny.images_dir), batch_size=4).set_index("seq_id")
    for workers in (0, 1):
        fp32 = loader_predict(model, frame, str(tiny.images_dir), batch_size=8, workers=workers, device="cpu",
                              amp="off").set_index("seq_id")
        assert list(fp32.index) == list(plain.index) and list(fp32.columns) == list(plain.columns)
        assert float((fp32 - plain).abs().to_numpy().max()) < 1e-5
    bf16 = loader_predict(model, frame, str(tiny.images_dir), batch_size=8, workers=0, device="cpu",
                          amp="bf16").set_index("seq_id")
    assert 0 < float((bf16 - plain).abs().to_numpy().max()) < 0.05


@pytest.mark.timeout(240)
def test_prepare_bench_runs_both_modes_against_the_exact_loop(ray_session, tmp_path):
    data = make_demo_dataset(tmp_path / "data", num_sequences=3, seed=0, image_sizes=((2048, 1536),))
    result = bench_prepare(str(data.train_metadata), str(data.images_dir), repeats=1)
    assert [t["name"] for t in result["timings"]] == [
        "single-process PIL loop", f"multiprocessing.Pool({os.cpu_count()})", "Ray Data prepare job",
        "single loop, fast decode", "Ray Data job, fast decode"]
    assert result["outputs_identical"]  # within each mode, whatever the parallelism
    for key in ("ratio_vs_single", "fast_vs_single", "fast_vs_exact_job", "fast_loop_vs_single"):
        assert positive_finite(result[key]), key
    gap = result["pixel_gap"]
    assert gap["images"] == data.num_train_images and 0 < gap["mad"] <= result["targets"]["max_mad"]
    text = format_prepare(result)
    assert "fast: Ray / single exact" in text and "target >= 3.0" in text and "max abs difference" in text
    json.dumps(result)


@pytest.mark.timeout(180)
def test_memory_bench_counts_the_job_not_ray_itself(ray_session, tmp_path):
    # Full-size frames (about 0.1 s to decode each): a task lasts long enough to be sampled busy.
    data = make_demo_dataset(tmp_path / "data", num_sequences=4, seed=0, image_sizes=((1920, 1080), (2048, 1536)))
    result = bench_memory(str(data.train_metadata), str(data.images_dir), images=4, factor=10, long_side=64,
                          batch_size=4, rows_per_task=8, interval=0.02, warmup=False)
    assert result["images"] == 4 and result["factor"] == 10
    for stage, title in (("prepare", "MapBatches"), ("predict", "MapWorker")):
        r = result[stage]
        assert r["n"]["images"] == 4 and r["many"]["images"] == 40
        for run in (r["n"], r["many"]):
            assert run["peak_rss_mb"] > run["driver_baseline_mb"] > 0
            assert run["peak_workers_mb"] > 0 and run["samples"] >= 2
            # The job's own workers only: not Ray's system actors, nor what the train test left running.
            assert title in run["job_process_titles"]
            assert not set(run["job_process_titles"]) & {"DashboardAgent", "_StatsActor", "TrainController"}
            assert run["ray_own_mb_before"] > 0
        assert positive_finite(r["ratio"])
    assert "target <= 1.2" in format_memory(result)
    json.dumps(result)


@pytest.mark.timeout(60)
def test_machine_block_and_device_check(ray_session):
    info = machine_info("cpu")
    assert {"cpus", "ray_cpus", "torch_threads_driver", "device_name", "date"} <= set(info)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            check_device("cuda")
    with pytest.raises(InputError, match="'cpu' or 'cuda'"):
        check_device("tpu")
    sampler = JobMemorySampler()
    sampler.start()
    sampler.stop()
    assert sampler.as_dict()["peak_rss_mb"] >= sampler.driver_baseline_mb > 0
    assert sampler.as_dict()["ray_own_mb_before"] > 0


def test_bench_recipe_is_one_stage_of_cpu_tiny():
    recipe = bench_recipe(long_side=80, epochs=3, batch_size=8)
    assert recipe.model == "resnet10t" and len(recipe.stages) == 1
    stage = recipe.stages[0]
    assert (stage.long_side, stage.epochs, stage.batch_size) == (80, 3, 8)
    assert recipe.eval_long_side == 80


@pytest.mark.timeout(300)
def test_scale_bench_runs_every_step_on_both_tables(ray_session):
    result = bench_scale(rows=200_000, reference_rows=20_000, world_size=8, batch_size=16, long_side=64)
    steps = ["table", "put", "indices", "dataset", "first batch"]
    for side, rows in (("season", 200_000), ("reference", 20_000)):
        r = result[side]
        assert [s["step"] for s in r["steps"]] == steps
        assert all(math.isfinite(s["seconds"]) and s["seconds"] >= 0 for s in r["steps"])
        assert all(math.isfinite(s["peak_rss_growth_mb"]) and s["rss_after_mb"] > 0 for s in r["steps"])
        assert r["rows"] == rows and r["rank_rows"] == rows // 8
        assert 2.4 < rows / r["sequences"] < 2.9  # Serengeti's 2.65 images per sequence
        assert r["batch_rows"] == 16 and r["batch_rows_match_indices"]
        assert positive_finite(r["table_mb"]) and r["table_mb"] < r["frame_mb"]
    assert set(result["ratios"]) == set(steps)
    assert [p["step"] for p in result["plain"]] == ["plain permutation + slice", "plain decode of one batch"]
    assert all(math.isfinite(v) for v in result["vs_plain"].values())
    assert result["peak_rss_mb"] >= result["rss_start_mb"] > 0
    assert "first batch" in format_scale(result)
    json.dumps(result)


def test_gpu_sampler_averages_sm_use_and_says_when_there_is_no_nvml(monkeypatch):
    import sys
    import time
    import types

    from camtrap.bench.common import GpuSampler

    readings = iter([0, 0, 80, 100] + [100] * 1000)
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 1, nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=next(readings)))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with GpuSampler(interval_s=0.01) as sampler:
        deadline = time.monotonic() + 10
        while len(sampler.samples) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    got = sampler.summary()
    assert got["samples"] >= 4 and "unavailable" not in got
    n = got["samples"]
    assert math.isclose(got["mean_sm_percent"], (180 + 100 * (n - 4)) / n)
    assert math.isclose(got["busy_mean_sm_percent"], (180 + 100 * (n - 4)) / (n - 2))
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: nothing sampled, the reason given
    with GpuSampler() as none:
        pass
    assert none.summary()["samples"] == 0 and "no NVML" in none.summary()["unavailable"]


@pytest.mark.timeout(240)
def test_ingest_bench_feeds_both_sides_the_same_images_and_says_where_the_consumer_waited(ray_session, tiny):
    from camtrap.bench import bench_ingest, format_ingest

    result = bench_ingest(str(tiny.train_metadata), str(tiny.train_labels), str(tiny.images_dir), long_side=64,
                          batch_size=4, epochs=2, repeats=1, copies=2, cpus=2)
    steps = result["rows_per_epoch"] // 4
    for side in ("platform", "plain"):
        (run,) = result[side]["runs"]
        # Every epoch yields the same full batches on both sides (4:3 and 16:9 frames padded alike).
        assert [e["images"] for e in run] == [4 * steps, 4 * steps]
        assert positive_finite(result[side]["median_steady_images_per_s"])
    assert positive_finite(result["ratio"]) and result["targets"] == {"ratio": 0.95}
    blocked, decode = result["blocked_s"], result["decode"]
    assert {"production wait", "collate", "host to device", "blocked in all"} <= set(blocked)
    assert decode["tasks"] >= 2 and decode["task_cpu_s"] > 0  # sized from 2 CPUs: several decode tasks
    assert "target >= 0.95" in format_ingest(result) and "production wait" in format_ingest(result)
    json.dumps(result)


def test_the_synthetic_ceiling_runs_the_platform_step_on_a_batch_already_on_the_device(ray_session, tiny):
    from camtrap.bench.ceiling import synthetic_ceiling
    from camtrap.bench.train import bench_recipe, train_setup
    from camtrap.config.recipe import crop_long_side

    setup = train_setup(str(tiny.train_metadata), str(tiny.train_labels), str(tiny.images_dir),
                        bench_recipe(64, 2, 4), 1)
    got = synthetic_ceiling(setup, steps=2, warmup=1)
    w = crop_long_side(64, setup.stage.crop_ratio)  # the stage's crop, 4:3
    assert got["input"] == f"{w}x{round(w * 3 / 4)}" and got["batch_size"] == 4 and positive_finite(got["images_per_s"])
