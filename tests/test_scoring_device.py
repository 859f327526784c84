"""Scoring on GPUs, as far as CPUs can show it: the autocast rule by device and compute capability, the
default batch by device, the resize moved from the model actor into the decode tasks with the very same
pixels, the pinned non-blocking copy path, and CPU predictions unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from jobs import load_job
from PIL import Image

from camtrap.bench import untrained_model_file
from camtrap.bench.common import using_torch_threads
from camtrap.data.classes import FILE_NAME, SEQ_ID
from camtrap.data.frames import ERROR, IMAGE, decode_batch, image_column
from camtrap.data.imageio import resize_long_side
from camtrap.errors import InputError
from camtrap.infer.actors import CPU_SCORING_BATCH, GPU_SCORING_BATCH, plan_actors, scoring_batch_size
from camtrap.infer.predict import predict, queue_bytes
from camtrap.infer.predictor import FlipTTAPredictor, scoring_autocast
from camtrap.runtime import ClusterView, NodeShape
from camtrap.train.augment import DeviceNormalizer
from camtrap.train.models import forward_by_shape, load_trained

pytestmark = pytest.mark.timeout(300)

LAPTOP = ClusterView(nodes=[NodeShape(cpus=2, gpus=0)])
GPU_NODE = ClusterView(nodes=[NodeShape(cpus=0, gpus=0), NodeShape(cpus=16, gpus=1)])
#: Real frames of several sizes and orientations (one EXIF-rotated, one portrait, one CMYK), a truncated
#: file and a missing one.
FILES = ["images/serengeti_tutorial/PICT0500.JPG", "images/edge_cases/african_elephants_with_exif_orientation.jpg",
         "images/speciesnet_fullres/ocelot.jpg", "images/edge_cases/african_elephants_cmyk.jpg",
         "images/edge_cases/african_elephants_truncated_file.jpg", "images/gorongosa_fieldguide/baboon__baboon-trailcam-1.JPG",
         "images/nope/missing.jpg"]


def rows(files=FILES) -> dict[str, np.ndarray]:
    return {FILE_NAME: np.asarray(files, dtype=object), SEQ_ID: np.asarray([f"s{i}" for i in range(len(files))],
                                                                              dtype=object)}


# ------------------------------------------------------------------------------------------ autocast


@pytest.mark.parametrize(("capability", "expected"), [((9, 0), torch.bfloat16), ((8, 6), torch.bfloat16),
                                                      ((8, 0), torch.bfloat16), ((7, 5), torch.float16),
                                                      ((7, 0), torch.float16), ((6, 1), torch.float16)])
def test_autocast_auto_is_bf16_from_compute_capability_8_and_fp16_below(monkeypatch, capability, expected):
    asked = []

    def capability_of(device=None):
        asked.append(device)
        return capability

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability_of)
    cuda = torch.device("cuda")
    assert scoring_autocast("auto", cuda) is expected
    assert asked, "auto must read the device's compute capability"
    assert scoring_autocast("off", cuda) is None
    assert scoring_autocast("bf16", cuda) is torch.bfloat16 and scoring_autocast("fp16", cuda) is torch.float16


def test_autocast_is_off_on_cpu_unless_bf16_is_asked_for():
    cpu = torch.device("cpu")
    assert scoring_autocast("auto", cpu) is None and scoring_autocast("off", cpu) is None
    assert scoring_autocast("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="needs a CUDA device"):
        scoring_autocast("fp16", cpu)


# --------------------------------------------------------------------------------------------- batch


def test_the_default_scoring_batch_follows_the_device_and_an_explicit_one_wins():
    assert (scoring_batch_size("cuda"), scoring_batch_size("cpu")) == (GPU_SCORING_BATCH, CPU_SCORING_BATCH) == (256, 16)
    assert scoring_batch_size("cuda", 32) == 32 and scoring_batch_size("cpu", 512) == 512
    with pytest.raises(InputError, match="at least 1"):
        scoring_batch_size("cuda", 0)
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        scoring_batch_size("gpu")  # type: ignore[arg-type]


def test_the_actor_plan_resolves_batch_and_autocast_by_device_and_says_so():
    gpu = plan_actors(GPU_NODE, 1)
    assert gpu.use_gpu and gpu.cuda and gpu.batch_size == 256 and gpu.amp == "auto"
    assert "batch 256 images, autocast auto (bf16 from compute capability 8.0, fp16 below)" in gpu.describe()
    cpu = plan_actors(LAPTOP, 1)
    assert not cpu.use_gpu and cpu.batch_size == 16
    assert "batch 16 images, float32 (autocast auto is off on CPU); decode and resize tasks run on CPUs" in cpu.describe()
    assert plan_actors(GPU_NODE, 1, batch_size=64).batch_size == 64 and plan_actors(LAPTOP, 1, batch_size=64).batch_size == 64
    assert "float32 (no autocast)" in plan_actors(GPU_NODE, 1, amp="off").describe()
    assert "autocast bf16" in plan_actors(LAPTOP, 1, amp="bf16").describe()
    # GPU nodes without CUDA (a simulated cluster): the actors compute on CPU, with a CPU's batch unless one
    # was given, and fp16 (CUDA only) is refused then.
    sim = gpu.on_cpu_after_all(None)
    assert (sim.use_gpu, sim.cuda, sim.batch_size) == (True, False, 16) and "auto is off on CPU" in sim.describe()
    assert plan_actors(GPU_NODE, 1, batch_size=8).on_cpu_after_all(8).batch_size == 8
    with pytest.raises(InputError, match="--amp fp16 needs CUDA"):
        plan_actors(GPU_NODE, 1, amp="fp16").on_cpu_after_all(None)
    with pytest.raises(InputError, match="--amp fp16 needs CUDA"):
        plan_actors(LAPTOP, 1, amp="fp16")
    with pytest.raises(InputError, match="expected one of"):
        plan_actors(GPU_NODE, 1, amp="fp8")


def test_the_object_store_cap_lets_a_gpu_batch_queue():
    small = queue_bytes([96], actors=1, batch_size=16)
    assert small == 2 * 256 * 2**20  # the floor: at least 2 actors' worth of 256 MiB
    big = queue_bytes([512], actors=1, batch_size=256)
    assert big >= 2 * 3 * 256 * 512 * 512 * 3  # 3 batches of 256 square 512-px frames per actor
    assert queue_bytes([512, 352], actors=2, batch_size=256) > big  # every column of an ensemble counts


def test_the_job_s_flags_default_to_the_device_s_batch_and_auto_autocast():
    job = load_job("predict")
    args = job.parse_args(["--model", "m.pt", "--images-dir", "d", "--out", "o.csv"])
    assert args.batch_size is None and args.amp == "auto"
    args = job.parse_args(["--model", "m.pt", "--images-dir", "d", "--out", "o.csv", "--batch-size", "64", "--amp", "off"])
    assert args.batch_size == 64 and args.amp == "off"
    for bad in (["--amp", "fp8"], ["--batch-size", "0"]):
        with pytest.raises(SystemExit):
            job.parse_args(["--model", "m.pt", "--images-dir", "d", "--out", "o.csv", *bad])


# -------------------------------------------------------------------------------- resize in the decode


@pytest.mark.parametrize("decode", ["exact", "fast"])
def test_decode_tasks_resize_to_each_model_s_long_side_with_the_pixels_the_actor_made(real_dir, decode):
    at_512 = decode_batch(rows(), str(real_dir), decode)
    sized = decode_batch(rows(), str(real_dir), decode, long_sides=[96, 64, 96])
    assert set(sized) == {FILE_NAME, SEQ_ID, ERROR, image_column(96), image_column(64)}  # one column per size
    assert list(sized[ERROR]) == list(at_512[ERROR])
    assert sum(bool(e) for e in sized[ERROR]) == 2 and "file not found" in sized[ERROR][-1]
    for i, error in enumerate(at_512[ERROR]):
        for side in (96, 64):
            got = sized[image_column(side)][i]
            if error:
                assert got.shape == (0, 0, 3)
                continue
            # What FlipTTAPredictor did in the actor's thread before: PIL on the 512-px image.
            before = np.asarray(resize_long_side(Image.fromarray(at_512[IMAGE][i]), side))
            assert got.dtype == np.uint8 and got.shape == before.shape and np.array_equal(got, before)
            assert max(got.shape[:2]) <= side and got.shape != at_512[IMAGE][i].shape


def test_the_actor_scores_the_decode_columns_as_it_scored_its_own_resize_on_cpu(real_dir, tmp_path):
    model = untrained_model_file(str(tmp_path / "model.pt"), long_side=96)
    at_512 = decode_batch(rows(), str(real_dir))
    batch = decode_batch(rows(), str(real_dir), long_sides=[96])
    with using_torch_threads(1):
        actor = FlipTTAPredictor(model, "probs_0")
        assert actor.device.type == "cpu" and actor.amp_dtype is None and actor.norm.pin_memory is False
        got = actor(dict(batch))["probs_0"]
        # The reference: the previous actor's path (its own resize of the 512-px image), same batch, same model.
        ref_model, meta = load_trained(model)
        ok = [i for i, e in enumerate(at_512[ERROR]) if not e]
        resized = [np.asarray(resize_long_side(Image.fromarray(at_512[IMAGE][i]), 96)) for i in ok]
        ref = forward_by_shape(ref_model, resized, DeviceNormalizer(meta["mean"], meta["std"]), flip=True)
    assert len(got) == len(FILES)
    for k, i in enumerate(ok):
        assert got[i].dtype == np.float32 and got[i].shape == (2 * 54,)
        np.testing.assert_array_equal(got[i], ref[k].reshape(-1))
    assert all(got[i].shape == (0,) for i in range(len(FILES)) if i not in ok)
    with pytest.raises(KeyError, match="image_96"):  # the actor never resizes: a batch at 512 px is refused
        actor(dict(at_512))


def test_a_pinned_batch_takes_a_non_blocking_copy_and_the_same_values(monkeypatch):
    pinned, copies = [], []
    real_to = torch.Tensor.to

    def pin_memory(self):  # CPU-only torch cannot pin: record the call, return a copy as pinning does
        pinned.append(tuple(self.shape))
        return self.clone()

    def to(self, *args, **kwargs):
        copies.append(kwargs.get("non_blocking"))
        return real_to(self, *args, **kwargs)

    batch = np.random.default_rng(0).integers(0, 256, (3, 8, 10, 3), dtype=np.uint8)
    plain = DeviceNormalizer([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])(batch)
    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", to)
    via_pinned = DeviceNormalizer([0.4, 0.5, 0.6], [0.2, 0.25, 0.3], pin_memory=True)(batch)
    assert pinned == [(3, 8, 10, 3)] and copies[0] is True
    assert via_pinned.shape == (3, 3, 8, 10) and torch.equal(via_pinned, plain)
    pinned.clear()
    DeviceNormalizer([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])(batch)
    assert pinned == []  # off by default: training's normaliser and CPU actors are unchanged


def test_fp16_on_cpu_actors_is_refused_before_any_image_is_scored(ray_session, real_dir, tmp_path):
    model = untrained_model_file(str(tmp_path / "model.pt"), long_side=64)
    metadata = tmp_path / "metadata.csv"
    pd.DataFrame({SEQ_ID: ["a"], FILE_NAME: [FILES[0]]}).to_csv(metadata, index=False)
    with pytest.raises(InputError, match="--amp fp16 needs CUDA"):
        predict([model], str(metadata), str(real_dir), str(tmp_path / "sub.csv"), use_gpu=False, amp="fp16")
    with pytest.raises(InputError, match="--amp 'fp8'"):
        predict([model], str(metadata), str(real_dir), str(tmp_path / "sub.csv"), amp="fp8")
    assert not list(tmp_path.glob("**/part-*.parquet"))  # nothing was scored
