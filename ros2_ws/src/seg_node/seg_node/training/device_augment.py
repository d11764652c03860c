"""The CUDA data path: the decoded data set resident on the device, augmented there in torch.

The cached uint8 images are uploaded once; each batch is scaled, cropped, flipped, colour-jittered
and given camera effects on the device with the same random values (``draw_params``, seeded per
(seed, epoch, index)) as the CPU path, so a resumed run is still exact. The functions work on
any device; the tests run them on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .augment import PAD_COLOR, Augmentation, AugmentParams, CameraEffects, draw_params, gaussian_kernel
from .data import ImageCache


def crop_sample(
    image: torch.Tensor, label: torch.Tensor, p: AugmentParams, crop_size: tuple[int, int], ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's crop of the scaled image: (H, W, 3) uint8 and (H, W) labels to (3, h, w) float 0..255, (h, w) long.

    The image is sampled bilinearly at cv2.resize's pixel centres (edges replicated), the label
    with cv2.resize's nearest rule; pixels beyond the scaled image are padding (grey, ignored).
    """
    height, width = label.shape
    scaled_h, scaled_w = p.scaled_size
    crop_h, crop_w = crop_size
    device = image.device
    rows = torch.arange(p.top, p.top + crop_h, device=device, dtype=torch.float64)
    cols = torch.arange(p.left, p.left + crop_w, device=device, dtype=torch.float64)
    # source x = (X + 0.5) * width / scaled_w - 0.5 is grid_sample's x_norm = (2X + 1) / scaled_w - 1
    grid_y, grid_x = (2 * rows + 1) / scaled_h - 1, (2 * cols + 1) / scaled_w - 1
    grid = torch.stack(torch.meshgrid(grid_x, grid_y, indexing="xy"), dim=-1).float()[None]
    source = image.permute(2, 0, 1)[None].float()
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    source_rows = torch.floor(rows * (height / scaled_h)).long().clamp_(0, height - 1)
    source_cols = torch.floor(cols * (width / scaled_w)).long().clamp_(0, width - 1)
    crop = label[source_rows[:, None], source_cols[None, :]].long()
    inside_h, inside_w = max(0, scaled_h - p.top), max(0, scaled_w - p.left)
    if inside_h < crop_h or inside_w < crop_w:
        pad = torch.tensor(PAD_COLOR, dtype=out.dtype, device=device).view(3, 1, 1)
        out[:, inside_h:], out[:, :, inside_w:] = pad, pad
        crop[inside_h:], crop[:, inside_w:] = ignore_index, ignore_index
    if p.flip:
        out, crop = out.flip(-1), crop.flip(-1)
    if p.jitter is not None:
        out = jitter_colors(out, p.jitter)
    if p.camera is not None:
        out = apply_camera_effects(out, p.camera)
    return out, crop


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB in 0..255 to HSV in OpenCV's ranges: hue 0..180, saturation and value 0..255."""
    r, g, b = rgb.unbind(0)
    value, _ = rgb.max(0)
    delta = value - rgb.min(0)[0]
    saturation = torch.where(value > 0, 255 * delta / value.clamp(min=1e-6), torch.zeros_like(value))
    safe = delta.clamp(min=1e-6)
    hue = torch.where(
        value == r, 60 * (g - b) / safe, torch.where(value == g, 120 + 60 * (b - r) / safe, 240 + 60 * (r - g) / safe)
    )
    hue = torch.where(delta > 0, hue % 360, torch.zeros_like(hue)) / 2
    return torch.stack([hue, saturation, value])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = hsv.unbind(0)
    h = (hue * 2 / 60) % 6
    s = saturation / 255
    k = torch.stack([(5 + h) % 6, (3 + h) % 6, (1 + h) % 6])  # r, g, b
    return value * (1 - s * (torch.minimum(k, 4 - k).clamp(0, 1)))


def jitter_colors(image: torch.Tensor, jitter: tuple[float, float, float, float]) -> torch.Tensor:
    """The torch version of ``augment.jitter_colors`` on (3, H, W) float 0..255 (no uint8 rounding in between)."""
    hue, saturation, contrast, brightness = jitter
    hsv = rgb_to_hsv(image)
    hsv = torch.stack([(hsv[0] + hue) % 180, (hsv[1] * saturation).clamp(0, 255), hsv[2]])
    out = hsv_to_rgb(hsv)
    mean = out.mean()
    return ((out - mean) * contrast + mean + brightness).clamp(0, 255)


def apply_camera_effects(image: torch.Tensor, effects: CameraEffects) -> torch.Tensor:
    """The torch version of ``augment.apply_camera_effects`` on (3, H, W) float 0..255; the noise's grain is
    torch's, drawn from the same seed."""
    out = image
    if effects.blur_sigma > 0:
        kernel = torch.from_numpy(gaussian_kernel(effects.blur_sigma)).to(image.device)
        radius = kernel.numel() // 2
        padded = F.pad(out[:, None], (radius, radius, radius, radius), mode="reflect")  # OpenCV's BORDER_REFLECT_101
        out = F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))[:, 0]
    if effects.noise_sigma > 0:
        generator = torch.Generator(device=image.device).manual_seed(effects.noise_seed)
        out = out + effects.noise_sigma * torch.randn(out.shape, generator=generator, device=image.device)
    return 255 * (out.clamp(0, 255) / 255) ** effects.gamma


def augment_batch(
    images: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    params: Sequence[AugmentParams],
    augmentation: Augmentation,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops of a batch: (N, 3, h, w) float 0..255 and (N, h, w) long."""
    crops = [
        crop_sample(image, label, p, augmentation.crop_size, ignore_index)
        for image, label, p in zip(images, labels, params, strict=True)
    ]
    return torch.stack([c[0] for c in crops]), torch.stack([c[1] for c in crops])


class DeviceBatches:
    """The cached training set on ``device``; ``batches(indices)`` yields normalised, augmented batches there."""

    def __init__(
        self,
        cache: ImageCache,
        augmentation: Augmentation,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int,
        device: torch.device,
        channels_last: bool = True,
    ) -> None:
        def upload(arrays: np.ndarray | list[np.ndarray]) -> torch.Tensor | list[torch.Tensor]:
            if isinstance(arrays, np.ndarray):
                return torch.from_numpy(arrays).to(device)
            return [torch.from_numpy(a).to(device) for a in arrays]

        self.images, self.labels = upload(cache.images), upload(cache.labels)
        self.shapes = [label.shape for label in cache.labels]
        self.augmentation, self.ignore_index, self.seed = augmentation, cache.ignore_index, seed
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.channels_last = channels_last
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.shapes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def params(self, index: int) -> AugmentParams:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return draw_params(rng, self.augmentation, *self.shapes[index])

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = augment_batch(
            [self.images[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.params(i) for i in indices],
            self.augmentation,
            self.ignore_index,
        )
        images = (images - self.mean) / self.std
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return images.contiguous(memory_format=memory_format), labels

    def batches(self, indices: Sequence[int], batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(indices) - batch_size + 1, batch_size):
            yield self.batch(indices[start : start + batch_size])
