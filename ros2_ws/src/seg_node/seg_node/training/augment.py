"""Training augmentation on the CPU: random scale, crop, mirror, colour jitter and camera effects of uint8 images.

The random values of a sample come from ``draw_params`` with a generator seeded by
(seed, epoch, index), in one fixed order, so every data path (the original resize-then-crop
``augment``, the cheaper ``augment_crop`` and the torch version in ``device_augment``) sees the
same crops and a resumed run repeats an uninterrupted one exactly. Options that are off draw
nothing, so a recipe without them draws what it drew before they existed. The one exception to
"the same": the sensor noise's pixels come from a seed drawn here, through NumPy on the CPU and
torch on the device, so the two paths add noise of the same strength but not the same grain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from .config import TrainingConfig

PAD_COLOR = (124, 117, 104)  # the image padding: CamVid's mean grey; padded labels are ignored


@dataclass
class Augmentation:
    crop_size: tuple[int, int]  # (height, width)
    scale_range: tuple[float, float] = (0.5, 2.0)
    mirror: bool = True
    color_jitter: float = 0.0  # relative strength of brightness, contrast, saturation and hue changes
    camera_effects: float = 0.0  # relative strength of exposure gamma, blur and sensor noise

    @classmethod
    def of(cls, config: TrainingConfig) -> Augmentation:
        """A training configuration's augmentation."""
        return cls(config.crop_size, config.scale_range, config.mirror, config.color_jitter, config.camera_effects)


# camera_effects 1.0: gamma in [1/1.5, 1.5], blur sigma up to 1.5 pixels on half the crops, noise sigma up to 8 of 255
MAX_LOG_GAMMA = math.log(1.5)
MAX_BLUR_SIGMA = 1.5
BLUR_SHARE = 0.5
MAX_NOISE_SIGMA = 8.0


@dataclass(frozen=True)
class CameraEffects:
    """What another camera, lens or light does to a frame: focus or motion blur, sensor noise, a tone curve."""

    blur_sigma: float  # Gaussian blur, pixels of the crop; 0: sharp
    noise_sigma: float  # additive Gaussian noise, in 0..255 units
    noise_seed: int  # the noise's pixels
    gamma: float  # out = 255 * (in / 255) ** gamma, after blur and noise

    @classmethod
    def draw(cls, rng: np.random.Generator, strength: float) -> CameraEffects:
        # every value is drawn whether used or not: one fixed order of draws per sample
        blurred = rng.random() < BLUR_SHARE
        blur_sigma = rng.uniform(0, MAX_BLUR_SIGMA * strength)
        noise_sigma = rng.uniform(0, MAX_NOISE_SIGMA * strength)
        noise_seed = int(rng.integers(2**31))
        gamma = math.exp(rng.uniform(-1, 1) * MAX_LOG_GAMMA * strength)
        return cls(blur_sigma if blurred else 0.0, noise_sigma, noise_seed, gamma)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """The normalised 1-D Gaussian of ``sigma`` pixels over +-3 sigma (float32), for both data paths' blur."""
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


@dataclass
class AugmentParams:
    """One sample's random values: the scaled size, the crop's corner in the (padded) scaled image, flip, jitter,
    camera effects."""

    scaled_size: tuple[int, int]  # (height, width) of the whole image after scaling
    top: int
    left: int
    flip: bool
    jitter: tuple[float, float, float, float] | None  # hue shift (OpenCV units), saturation, contrast, brightness
    camera: CameraEffects | None = None


def draw_params(rng: np.random.Generator, augmentation: Augmentation, height: int, width: int) -> AugmentParams:
    scale = rng.uniform(*augmentation.scale_range)
    scaled_h, scaled_w = max(1, round(height * scale)), max(1, round(width * scale))
    crop_h, crop_w = augmentation.crop_size
    top = int(rng.integers(0, max(scaled_h, crop_h) - crop_h + 1))
    left = int(rng.integers(0, max(scaled_w, crop_w) - crop_w + 1))
    flip = bool(augmentation.mirror and rng.random() < 0.5)
    jitter = None
    if augmentation.color_jitter > 0:
        strength = augmentation.color_jitter
        jitter = (
            rng.uniform(-18, 18) * strength,  # OpenCV hue is 0..180
            1 + rng.uniform(-1, 1) * strength,
            1 + rng.uniform(-1, 1) * strength,
            rng.uniform(-1, 1) * strength * 64,
        )
    camera = CameraEffects.draw(rng, augmentation.camera_effects) if augmentation.camera_effects > 0 else None
    return AugmentParams((scaled_h, scaled_w), top, left, flip, jitter, camera)


def augment(
    image: np.ndarray, label: np.ndarray, augmentation: Augmentation, ignore_index: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The original data path: resize the whole image, pad, crop, flip, recolour (kept as the speed baseline)."""
    p = draw_params(rng, augmentation, *label.shape)
    size = p.scaled_size[::-1]
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    crop_h, crop_w = augmentation.crop_size
    pad_h, pad_w = max(0, crop_h - label.shape[0]), max(0, crop_w - label.shape[1])
    if pad_h or pad_w:
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=PAD_COLOR)
        label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=ignore_index)
    image = image[p.top : p.top + crop_h, p.left : p.left + crop_w]
    label = label[p.top : p.top + crop_h, p.left : p.left + crop_w]
    return _flip_and_recolour(image, label, p)


def augment_crop(
    image: np.ndarray, label: np.ndarray, augmentation: Augmentation, ignore_index: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The same augmentation, computing only the crop: one affine warp of the image, an index gather of the label.

    The image is sampled at cv2.resize's pixel centres and the label with cv2.resize's nearest rule,
    so the crop matches ``augment``'s up to rounding, at a fraction of the cost for scales above 1.
    """
    p = draw_params(rng, augmentation, *label.shape)
    height, width = label.shape
    scaled_h, scaled_w = p.scaled_size
    crop_h, crop_w = augmentation.crop_size
    sy, sx = scaled_h / height, scaled_w / width
    matrix = np.array([[sx, 0, 0.5 * sx - 0.5 - p.left], [0, sy, 0.5 * sy - 0.5 - p.top]])
    image = cv2.warpAffine(image, matrix, (crop_w, crop_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    rows, cols = _nearest_indices(p.top, crop_h, height, scaled_h), _nearest_indices(p.left, crop_w, width, scaled_w)
    label = label[np.clip(rows, 0, height - 1)[:, None], np.clip(cols, 0, width - 1)[None, :]]
    inside_h, inside_w = max(0, scaled_h - p.top), max(0, scaled_w - p.left)
    if inside_h < crop_h or inside_w < crop_w:  # beyond the scaled image: padding
        image[inside_h:], image[:, inside_w:] = PAD_COLOR, PAD_COLOR
        label[inside_h:], label[:, inside_w:] = ignore_index, ignore_index
    return _flip_and_recolour(image, label, p)


def _nearest_indices(start: int, count: int, size: int, scaled: int) -> np.ndarray:
    """cv2.resize's INTER_NEAREST source index of scaled pixels start..start+count: floor(x * size / scaled)."""
    return np.floor(np.arange(start, start + count) * (size / scaled)).astype(np.int64)


def _flip_and_recolour(image: np.ndarray, label: np.ndarray, p: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    if p.flip:
        image, label = image[:, ::-1], label[:, ::-1]
    if p.jitter is not None:
        image = jitter_colors(np.ascontiguousarray(image), p.jitter)
    if p.camera is not None:
        image = apply_camera_effects(np.ascontiguousarray(image), p.camera)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def jitter_colors(image: np.ndarray, jitter: tuple[float, float, float, float]) -> np.ndarray:
    """Shift hue, scale saturation, then contrast (around the image mean) and brightness: ContextNet's augmentation."""
    hue, saturation, contrast, brightness = jitter
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue) % 180
    hsv[..., 1] *= saturation
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    out = (out - out.mean()) * contrast + out.mean() + brightness
    return np.clip(out, 0, 255).astype(np.uint8)


def apply_camera_effects(image: np.ndarray, effects: CameraEffects) -> np.ndarray:
    """Blur, then sensor noise, then the tone curve, on an (H, W, 3) uint8 image."""
    out = image.astype(np.float32)
    if effects.blur_sigma > 0:
        kernel = gaussian_kernel(effects.blur_sigma)
        out = cv2.sepFilter2D(out, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)
    if effects.noise_sigma > 0:
        noise = np.random.default_rng(effects.noise_seed).standard_normal(out.shape, dtype=np.float32)
        out += noise * np.float32(effects.noise_sigma)
    out = 255 * (np.clip(out, 0, 255) / 255) ** effects.gamma
    return np.rint(out).astype(np.uint8)
