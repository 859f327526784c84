"""The train and eval pipelines of the 2nd-place solution (albumentations 2.0.8).

Train (write-up, point 6-7): resize the long side to the stage's size with PIL LANCZOS (exactly that
size, no floor to 16: :func:`stage_dims`), then a random crop of ``long_side / 1.14`` on the long side that keeps the image's aspect ratio
(a rectangle, not a square), horizontal flip, CLAHE, ToGray and brightness/contrast with albumentations'
default parameters. Eval: the same resize, nothing else.

Input: the prepared image, an RGB ``uint8`` HWC array (a PIL image is accepted too). Output: a
``float32`` CHW array normalised with the model's mean and std (:func:`normalize`, shared by both
pipelines so train and eval can never disagree on it), or, with ``mean=None``, the ``uint8`` HWC array
itself: the Ray Data pipelines ship uint8 (4x fewer bytes through the object store) and the worker
normalises on its device with :class:`DeviceNormalizer`.

Crops keep the aspect ratio, so images of different aspect ratios give different output sizes; a batch
must hold one size (the Serengeti frames are all 4:3).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from camtrap.config.recipe import crop_long_side
from camtrap.data.imageio import resize_dims, resize_to

if TYPE_CHECKING:
    import albumentations as A

#: timm's ImageNet defaults, used when a model declares no normalisation.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def stage_dims(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Size of a training stage's resize: the long side exactly ``long_side``, the short side keeping the
    aspect ratio (rounded half up). No floor to 16, unlike the preparation rule.

    The seed resized each stage to its long side and cropped ``long_side / 1.14``: 296 -> 296x222 -> a
    256x192 crop, aspect 0.75. Flooring both sides to 16 first (the preparation rule) would give 288x208
    and a 256x185 crop (ratio 1.125, aspect 0.72): other geometry than the seed trained on.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid image size {width}x{height}")
    scale = long_side / max(width, height)
    return max(1, math.floor(width * scale + 0.5)), max(1, math.floor(height * scale + 0.5))


def stage_resize(image: Image.Image, long_side: int) -> Image.Image:
    """:func:`stage_dims` with PIL LANCZOS (the resampling of the preparation rule)."""
    return resize_to(image, stage_dims(image.width, image.height, long_side))


def crop_size(width: int, height: int, crop_long: int) -> tuple[int, int]:
    """(crop_w, crop_h) for an image of ``width`` x ``height``: long side ``crop_long``, short side keeping
    the image's own aspect ratio (rounded), both clipped to the image."""
    if width >= height:
        w, h = crop_long, max(1, round(crop_long * height / width))
    else:
        w, h = max(1, round(crop_long * width / height)), crop_long
    return min(w, width), min(h, height)


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW, ``(x / 255 - mean) / std`` per channel."""
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(1, 1, -1)
    std_arr = np.asarray(std, dtype=np.float32).reshape(1, 1, -1)
    out = (image.astype(np.float32) / np.float32(255.0) - mean_arr) / std_arr
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def _as_pil(image: np.ndarray | Image.Image) -> Image.Image:
    """Check the input contract (RGB uint8 HWC) and wrap it for PIL's resize."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected an RGB uint8 HWC numpy array or a PIL image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 HWC array, got shape {image.shape} dtype {image.dtype}")
    return Image.fromarray(image, mode="RGB")


def _finish(image: np.ndarray, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> np.ndarray:
    """Normalise to float32 CHW, or (no mean/std) return contiguous uint8 HWC for the device to normalise."""
    if mean is None:
        return np.ascontiguousarray(image)
    return normalize(image, mean, std)


class DeviceNormalizer:
    """uint8 NHWC (numpy) -> normalised float32 NCHW tensor on ``device``: :func:`normalize` done on the GPU.

    ``fill`` is the mean pixel in uint8, the padding colour that normalises to (about) zero. ``pin_memory``:
    copy each batch into page-locked host memory first, so the copy to a CUDA device is a real asynchronous
    DMA (``non_blocking``) rather than a staged one; only for a CUDA ``device`` (pinning needs CUDA).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], device="cpu", pin_memory: bool = False):
        import torch

        mean_t, std_t = _check_stats(mean, std)
        self.device = torch.device(device)
        self.pin_memory = bool(pin_memory)
        self.mean = torch.tensor(mean_t, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std_t, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.fill = np.clip(np.rint(np.asarray(mean_t) * 255.0), 0, 255).astype(np.uint8)

    def __call__(self, batch):
        """``batch``: uint8 NHWC, a numpy array or a tensor (one already on the device is not copied)."""
        import torch

        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))
        if self.pin_memory and x.device.type == "cpu":
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean) / self.std


def _check_stats(
    mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    if mean is None and std is None:
        return None, None
    if mean is None or std is None:
        raise ValueError("give both mean and std, or neither (uint8 output)")
    mean_t, std_t = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean_t) != 3 or len(std_t) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {mean_t} and {std_t}")
    if any(s <= 0 for s in std_t):
        raise ValueError(f"std values must be positive, got {std_t}")
    return mean_t, std_t


class EvalTransform:
    """Resize the long side with the seed's rule (LANCZOS) and normalise; deterministic."""

    def __init__(self, long_side: int, mean: Sequence[float] | None, std: Sequence[float] | None):
        self.long_side = int(long_side)
        self.mean, self.std = _check_stats(mean, std)

    def resize_target(self, width: int, height: int) -> tuple[int, int]:
        """The resize's output size for an image of ``width`` x ``height``: the preparation rule's."""
        return resize_dims(width, height, self.long_side)

    def __call__(self, image: np.ndarray | Image.Image) -> np.ndarray:
        img = _as_pil(image)
        return self.after_resize(np.asarray(resize_to(img, self.resize_target(*img.size))))

    def after_resize(self, resized: np.ndarray, seed: int | None = None) -> np.ndarray:
        """Everything after the resize (normalisation), for an image already at :meth:`resize_target`
        (a decoder that resized it itself, e.g. :func:`camtrap.data.imageio.load_sized`); ``seed`` unused."""
        return _finish(resized, self.mean, self.std)

    def __repr__(self) -> str:
        return f"EvalTransform(long_side={self.long_side}, mean={self.mean}, std={self.std})"


def _generators(seed: int | None) -> tuple[np.random.Generator, random.Random]:
    """The (numpy, python) generator pair every transform of a Compose shares; ``None``: fresh entropy."""
    return np.random.default_rng(seed), random.Random(seed)


class TrainTransform:
    """The seed's train pipeline; picklable (Ray ships it to workers), one Compose cached per crop size.

    ``seed`` makes the sequence of random draws reproducible (each crop size's Compose gets its own seed
    derived from it). Leave it ``None`` in training: copies of a seeded transform in several workers
    would draw the same augmentations.

    A per-call ``seed`` (``transform(image, seed=...)``, what :mod:`camtrap.train.epochs` passes: one seed per
    image from the recipe seed, the epoch and the row) fixes every draw of that call, whichever process
    makes it; the transform's own random state is left as it was. Cost: about 25 us per image (two
    generators), against about 10 ms for the resize and augmentations of a 512-px frame.

    Every transform of a Compose draws from one shared pair of generators, one after the other. Not
    albumentations' ``Compose(seed=...)``/``set_random_seed``, which gives each transform its own
    generator *with the same seed*: the flip, ToGray and CLAHE then read the same first number, so a
    grey image was always a flipped one, and with a seed per image CLAHE implied ToGray implied the flip.
    """

    def __init__(
        self,
        long_side: int,
        crop_ratio: float,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        seed: int | None = None,
    ):
        self.long_side = int(long_side)
        self.crop_ratio = float(crop_ratio)
        self.crop_long = crop_long_side(self.long_side, self.crop_ratio)
        self.mean, self.std = _check_stats(mean, std)
        self.seed = seed
        self._pipelines: dict[tuple[int, int], A.Compose] = {}

    def _pipeline(self, crop_w: int, crop_h: int) -> A.Compose:
        key = (crop_w, crop_h)
        pipeline = self._pipelines.get(key)
        if pipeline is None:
            # Imported on first use: albumentations brings cv2 (seconds), which recipe validation
            # (it calls crop_long_side) and the eval path do not need.
            import albumentations as A

            pipeline = A.Compose(
                [
                    A.RandomCrop(height=crop_h, width=crop_w),
                    A.HorizontalFlip(p=0.5),
                    A.CLAHE(p=0.1),
                    A.ToGray(num_output_channels=3, p=0.2),
                    A.RandomBrightnessContrast(p=0.6),
                ],
            )
            seed = None
            if self.seed is not None:
                seed = int(np.random.SeedSequence([self.seed, crop_w, crop_h]).generate_state(1)[0])
            pipeline.set_random_state(*_generators(seed))
            self._pipelines[key] = pipeline
        return pipeline

    def resize_target(self, width: int, height: int) -> tuple[int, int]:
        """The resize's output size for an image of ``width`` x ``height``: :func:`stage_dims`."""
        return stage_dims(width, height, self.long_side)

    def __call__(self, image: np.ndarray | Image.Image, seed: int | None = None) -> np.ndarray:
        """Augment one image; ``seed`` (a non-negative int) fixes this call's draws, ``None`` draws on."""
        return self.after_resize(np.asarray(stage_resize(_as_pil(image), self.long_side)), seed)

    def after_resize(self, resized: np.ndarray, seed: int | None = None) -> np.ndarray:
        """Crop, augment and finish an image already at :meth:`resize_target` (a decoder that resized it
        itself, e.g. :func:`camtrap.data.imageio.load_sized`)."""
        height, width = resized.shape[:2]
        crop_w, crop_h = crop_size(width, height, self.crop_long)
        pipeline = self._pipeline(crop_w, crop_h)
        if seed is None:
            augmented = pipeline(image=resized)["image"]
        else:
            before = pipeline.random_generator, pipeline.py_random
            pipeline.set_random_state(*_generators(seed))
            try:
                augmented = pipeline(image=resized)["image"]
            finally:
                pipeline.set_random_state(*before)
        return _finish(augmented, self.mean, self.std)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pipelines"] = {}  # rebuilt lazily where it lands
        return state

    def __repr__(self) -> str:
        return (
            f"TrainTransform(long_side={self.long_side}, crop_ratio={self.crop_ratio}, crop_long={self.crop_long}, "
            f"mean={self.mean}, std={self.std}, seed={self.seed})"
        )


def train_transform(
    long_side: int,
    crop_ratio: float,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    seed: int | None = None,
) -> TrainTransform:
    """The seed's train pipeline for one stage: resize, aspect-keeping random crop, flip, CLAHE, ToGray,
    brightness/contrast, normalise. Returns a callable ``uint8 HWC RGB -> float32 CHW``."""
    return TrainTransform(long_side, crop_ratio, mean, std, seed=seed)


def eval_transform(
    long_side: int, mean: Sequence[float] | None = IMAGENET_MEAN, std: Sequence[float] | None = IMAGENET_STD
) -> EvalTransform:
    """The eval/inference pipeline: the seed's resize (LANCZOS) then normalise; nothing random."""
    return EvalTransform(long_side, mean, std)
