"""seg_node.imaging: every camera encoding to RGB/BGR, padded rows, bad frames, colourising and blending."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

from seg_node.imaging import (
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    blend,
    colorize,
    decode_compressed,
    decode_raw,
    palette_lut,
    to_rgb,
)

HEIGHT, WIDTH = 6, 10


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def padded(pixels: np.ndarray, padding: int) -> tuple[bytes, int]:
    """Rows of ``pixels`` (HxWxC) followed by ``padding`` junk bytes each, and the step."""
    rows = pixels.reshape(pixels.shape[0], -1)
    step = rows.shape[1] + padding
    buffer = np.full((rows.shape[0], step), 0xAB, np.uint8)
    buffer[:, : rows.shape[1]] = rows
    return buffer.tobytes(), step


def uyvy_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """An HxWx2 UYVY frame; the reference for decoding is OpenCV's own YUV->RGB."""
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV).astype(np.int32)
    u = (yuv[:, 0::2, 1] + yuv[:, 1::2, 1]) // 2
    v = (yuv[:, 0::2, 2] + yuv[:, 1::2, 2]) // 2
    out = np.empty((rgb.shape[0], rgb.shape[1], 2), np.uint8)
    out[:, 0::2, 0], out[:, 1::2, 0] = u, v
    out[:, :, 1] = yuv[:, :, 0]
    return out


@pytest.mark.parametrize("padding", [0, 7])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_rgb_and_bgr_are_views_of_the_message_data(rgb, encoding, padding):
    pixels = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
    data, step = padded(pixels, padding)
    message_data = array.array("B", data)  # what rclpy hands the callback
    image, order = decode_raw(encoding, HEIGHT, WIDTH, step, message_data)
    assert order == encoding[:3]
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
    assert np.array_equal(to_rgb(image, order), rgb)
    assert np.shares_memory(image, np.frombuffer(message_data, np.uint8))


@pytest.mark.parametrize("padding", [0, 3])
def test_four_channel_and_mono_encodings(rgb, padding):
    alpha = np.full((HEIGHT, WIDTH, 1), 17, np.uint8)
    for encoding, pixels in [
        ("rgba8", np.concatenate([rgb, alpha], axis=2)),
        ("bgra8", np.concatenate([rgb[:, :, ::-1], alpha], axis=2)),
    ]:
        data, step = padded(pixels, padding)
        image, order = decode_raw(encoding, HEIGHT, WIDTH, step, data)
        assert np.array_equal(to_rgb(image, order), rgb), encoding
    gray = rgb[:, :, 0:1]
    data, step = padded(gray, padding)
    image, order = decode_raw("mono8", HEIGHT, WIDTH, step, memoryview(data))
    assert image.shape == (HEIGHT, WIDTH, 3)
    assert all(np.array_equal(to_rgb(image, order)[:, :, c], gray[:, :, 0]) for c in range(3))


@pytest.mark.parametrize("padding", [0, 4])
def test_yuv422_layouts(rgb, padding):
    uyvy = uyvy_from_rgb(rgb)
    yuyv = uyvy[:, :, ::-1].copy()  # Y U Y V: the same samples, swapped within each 2-byte pair
    expected = cv2.cvtColor(uyvy, cv2.COLOR_YUV2RGB_UYVY)
    # the decoded colours stay close to the source (chroma is shared by two pixels)
    assert np.abs(expected.astype(int) - rgb.astype(int)).mean() < 40
    for encodings, pixels in [(("yuv422", "uyvy"), uyvy), (("yuv422_yuy2", "yuyv"), yuyv)]:
        data, step = padded(pixels, padding)
        for encoding in encodings:
            image, order = decode_raw(encoding, HEIGHT, WIDTH, step, data)
            assert np.array_equal(to_rgb(image, order), expected), encoding


BAYER_PATTERNS = {"bayer_rggb8": "RGGB", "bayer_bggr8": "BGGR", "bayer_gbrg8": "GBRG", "bayer_grbg8": "GRBG"}


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """The HxW Bayer mosaic a sensor with ``pattern`` (ROS order: row 0 pixels 0,1 then row 1) records."""
    channel = {"R": 0, "G": 1, "B": 2}
    out = np.empty(rgb.shape[:2], np.uint8)
    for index, colour in enumerate(pattern):
        row, column = divmod(index, 2)
        out[row::2, column::2] = rgb[row::2, column::2, channel[colour]]
    return out


@pytest.mark.parametrize("padding", [0, 5])
@pytest.mark.parametrize("encoding", sorted(BAYER_PATTERNS))
def test_bayer_mosaics_decode_to_the_colour_they_sampled(encoding, padding):
    """A flat colour mosaicked in the encoding's pattern comes back as that colour (borders aside), and
    a random image decodes exactly as OpenCV's own demosaicing of the pattern's OpenCV code."""
    flat = np.empty((12, 16, 3), np.uint8)
    flat[:] = (200, 90, 30)
    data, step = padded(mosaic(flat, BAYER_PATTERNS[encoding]), padding)
    image, order = decode_raw(encoding, 12, 16, step, data)
    assert order == "rgb" and image.shape == (12, 16, 3)
    assert np.array_equal(image[2:-2, 2:-2], flat[2:-2, 2:-2]), encoding
    # OpenCV names the pattern by the second row's second and third pixels: ROS rggb is OpenCV's BG
    opencv = {"bayer_rggb8": cv2.COLOR_BayerBG2RGB, "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
              "bayer_gbrg8": cv2.COLOR_BayerGR2RGB, "bayer_grbg8": cv2.COLOR_BayerGB2RGB}[encoding]
    raw = mosaic(np.random.default_rng(1).integers(0, 256, (12, 16, 3), dtype=np.uint8), BAYER_PATTERNS[encoding])
    data, step = padded(raw, padding)
    assert np.array_equal(decode_raw(encoding, 12, 16, step, data)[0], cv2.cvtColor(raw, opencv))


def nv12_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """(H + H/2) x W: the Y plane, then U,V interleaved at half resolution (OpenCV's I420, re-packed)."""
    height, width = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).reshape(-1)
    y = i420[: height * width].reshape(height, width)
    u = i420[height * width: height * width * 5 // 4].reshape(height // 2, width // 2)
    v = i420[height * width * 5 // 4:].reshape(height // 2, width // 2)
    chroma = np.empty((height // 2, width), np.uint8)
    chroma[:, 0::2], chroma[:, 1::2] = u, v
    return np.concatenate([y, chroma])


@pytest.mark.parametrize("padding", [0, 6])
def test_nv12_and_nv21_with_padded_rows(rgb, padding):
    nv12 = nv12_from_rgb(rgb)
    expected = cv2.cvtColor(nv12, cv2.COLOR_YUV2RGB_NV12)
    nv21 = nv12.copy()
    nv21[HEIGHT:, 0::2], nv21[HEIGHT:, 1::2] = nv12[HEIGHT:, 1::2], nv12[HEIGHT:, 0::2]
    for encoding, pixels in [("nv12", nv12), ("nv21", nv21)]:
        data, step = padded(pixels, padding)
        image, order = decode_raw(encoding, HEIGHT, WIDTH, step, data)
        assert order == "rgb" and np.array_equal(image, expected), encoding
    # a flat colour survives the round trip (on noise, 2x2 pixels sharing chroma would blur it)
    flat = np.empty((8, 8, 3), np.uint8)
    flat[:] = (40, 160, 220)
    image, _ = decode_raw("nv12", 8, 8, 8, nv12_from_rgb(flat).tobytes())
    assert np.abs(image.astype(int) - flat.astype(int)).max() <= 3


@pytest.mark.parametrize(
    ("encoding", "height", "width", "step", "size", "reason"),
    [
        ("rgb16", HEIGHT, WIDTH, WIDTH * 6, HEIGHT * WIDTH * 6, "unsupported encoding"),
        ("rgb8", 0, WIDTH, WIDTH * 3, 0, "zero-size"),
        ("rgb8", HEIGHT, 0, 0, 0, "zero-size"),
        ("rgb8", HEIGHT, WIDTH, WIDTH * 3, HEIGHT * WIDTH * 3 - 1, "bytes"),
        ("rgb8", HEIGHT, WIDTH, WIDTH * 3 + 8, HEIGHT * WIDTH * 3 + 8, "bytes"),  # padding claimed, not sent
        ("rgb8", HEIGHT, WIDTH, WIDTH * 3 - 1, HEIGHT * WIDTH * 3, "step"),
        ("yuv422", HEIGHT, WIDTH - 1, (WIDTH - 1) * 2, HEIGHT * (WIDTH - 1) * 2, "even width"),
        ("nv12", HEIGHT, WIDTH - 1, WIDTH - 1, HEIGHT * (WIDTH - 1) * 3 // 2, "even width"),
        ("nv12", HEIGHT - 1, WIDTH, WIDTH, HEIGHT * WIDTH * 3 // 2, "even height"),
        ("nv12", HEIGHT, WIDTH, WIDTH, HEIGHT * WIDTH, "9 rows"),  # the chroma plane missing
        ("bayer_rggb8", HEIGHT, WIDTH, WIDTH, HEIGHT * WIDTH - 1, "bytes"),
    ],
)
def test_bad_raw_frames_name_the_reason(encoding, height, width, step, size, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_raw(encoding, height, width, step, bytes(size))


def test_supported_encodings_are_listed_in_the_error():
    with pytest.raises(ImageDecodeError) as error:
        decode_raw("bayer_rggb16", HEIGHT, WIDTH, WIDTH * 2, bytes(HEIGHT * WIDTH * 2))
    assert all(encoding in str(error.value) for encoding in SUPPORTED_ENCODINGS)


def test_compressed_jpeg_and_png_of_a_camvid_frame(camvid_pairs):
    image_path = camvid_pairs[0][0]
    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    jpeg = image_path.read_bytes()
    decoded, order = decode_compressed(array.array("B", jpeg))
    assert order == "bgr" and np.array_equal(decoded, bgr)
    ok, png = cv2.imencode(".png", bgr)
    assert ok
    decoded, _ = decode_compressed(png.tobytes())
    assert np.array_equal(decoded, bgr)
    ok, gray_png = cv2.imencode(".png", bgr[:, :, 0])
    decoded, _ = decode_compressed(gray_png.tobytes())
    assert decoded.shape == bgr.shape


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff\xe0 not really a jpeg", bytes(1000)])
def test_corrupt_compressed_frames_raise(data):
    with pytest.raises(ImageDecodeError):
        decode_compressed(data)


def test_colorize_uses_the_palette_and_blacks_out_unknown_ids():
    palette = np.array([[10, 20, 30], [200, 100, 0]], np.uint8)
    labels = np.array([[0, 1], [1, 255]], np.uint8)
    mask = colorize(labels, palette)
    assert mask.shape == (2, 2, 3) and mask.dtype == np.uint8
    assert mask[0, 0].tolist() == [10, 20, 30] and mask[0, 1].tolist() == [200, 100, 0]
    assert mask[1, 1].tolist() == [0, 0, 0]
    assert np.array_equal(colorize(labels, palette_lut(palette)), mask)


def test_colorize_is_the_palette_table_looked_up_per_pixel():
    """Every id of every pixel, strided views too: the same pixels as indexing the 256-colour table."""
    rng = np.random.default_rng(3)
    lut = palette_lut(rng.integers(0, 256, (256, 3)))
    labels = rng.integers(0, 256, (121, 243), dtype=np.uint8)
    for view in (labels, labels[::2, 1::3], labels.T):
        assert np.array_equal(colorize(view, lut), lut[view])


@pytest.mark.parametrize("palette", [np.zeros((257, 3)), np.array([[0, 0, 256]]), np.array([[-1, 0, 0]])])
def test_invalid_palettes_are_rejected(palette):
    with pytest.raises(ValueError, match="palette"):
        palette_lut(palette)


def test_blend_weights_image_and_mask_and_scales_a_smaller_mask(rgb):
    mask = np.zeros_like(rgb)
    mask[:] = (255, 0, 0)
    assert np.array_equal(blend(rgb, mask, 0.0), rgb)
    assert np.array_equal(blend(rgb, mask, 1.0), mask)
    half = blend(rgb, mask, 0.5).astype(int)
    assert np.abs(half - (rgb.astype(int) + mask.astype(int)) / 2).max() <= 1
    small = np.zeros((HEIGHT // 2, WIDTH // 2, 3), np.uint8)
    small[:, :] = (0, 255, 0)
    assert blend(rgb, small, 1.0)[HEIGHT - 1, WIDTH - 1].tolist() == [0, 255, 0]
    with pytest.raises(ValueError, match="alpha"):
        blend(rgb, mask, 1.5)
