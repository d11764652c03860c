"""Outputs that travel over Wi-Fi (#43 item 3): ``~/<camera>/<output>/compressed`` as image_transport's
compressed transport fills them; lossless PNG for the label and the colour mask, JPEG for the overlay."""

from __future__ import annotations

import sys
import threading

import cv2
import numpy as np
import pytest
import ros_helpers as ros
from sensor_msgs.msg import CompressedImage, Image

from seg_node.ros.compressed import compress

DOMAIN = ros.domain_id(offset=83)
OUTPUTS = ("label", "color_mask", "overlay")


def decoded(message: CompressedImage) -> np.ndarray:
    """As compressed_image_transport's subscriber decodes: by the format's target, back to its encoding."""
    image = cv2.imdecode(np.frombuffer(message.data, np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if message.format.startswith("rgb8") else image


def pixels(message: Image) -> np.ndarray:
    channels = {"mono8": 1, "rgb8": 3}[message.encoding]
    rows = np.frombuffer(message.data, np.uint8).reshape(message.height, message.step)[:, : message.width * channels]
    return rows if channels == 1 else rows.reshape(message.height, message.width, channels)


def test_formats_are_those_compressed_image_transport_writes_and_png_is_lossless():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 11, (48, 64), np.uint8)
    mask = rng.integers(0, 256, (48, 64, 3), np.uint8)
    label, colour = compress(labels, "png"), compress(mask, "png")
    overlay = compress(np.full((48, 64, 3), (200, 100, 50), np.uint8), "jpeg")
    assert (label.format, colour.format, overlay.format) == (
        "mono8; png compressed ", "rgb8; png compressed bgr8", "rgb8; jpeg compressed bgr8")
    assert np.array_equal(decoded(label), labels) and np.array_equal(decoded(colour), mask)
    assert np.abs(decoded(overlay).astype(int) - (200, 100, 50)).max() <= 3


@pytest.mark.slow  # a node process over DDS
def test_compressed_outputs_decode_to_the_raw_ones(make_weights, tmp_path):
    weights = make_weights(tmp_path, "cgnet")
    command = [sys.executable, "-m", "seg_node", "--ros-args", "-p", f"weights:={weights}", "-p", "backend:=torch",
               "-p", "device:=cpu", "-p", "threads:=1", "-p", "cameras:=[wifi]"]
    probe = ros.Probe(DOMAIN, "compressed_probe")
    log = tmp_path / "node.log"
    streaming = threading.Event()
    try:
        with ros.running_group(command, ros.node_environment(DOMAIN), log) as process:
            for output in OUTPUTS:  # the compressed ones only: they alone make the node work
                probe.subscribe(CompressedImage, f"/seg_node/wifi/{output}/compressed")
            probe.wait_for_publisher("/seg_node/wifi/overlay/compressed")
            publish = probe.image_publisher("/wifi")
            frame = ros.rgb_frame(120, 160, seed=4)

            def stream() -> None:
                sequence = 0
                while not streaming.wait(0.1):
                    sequence += 1
                    publish(ros.image_message(frame, f"wifi_{sequence}", sequence, 0))

            threading.Thread(target=stream, daemon=True).start()
            arrived = {output: probe.wait_for(f"/seg_node/wifi/{output}/compressed", lambda m: True)
                       for output in OUTPUTS}
            assert arrived["label"].format == "mono8; png compressed "
            assert arrived["color_mask"].format == "rgb8; png compressed bgr8"
            assert arrived["overlay"].format == "rgb8; jpeg compressed bgr8"

            for output in OUTPUTS:  # now the raw ones as well: the same frames, the same pixels
                probe.subscribe(Image, f"/seg_node/wifi/{output}")
            raw_label = probe.wait_for("/seg_node/wifi/label", lambda m: True)
            frame_id = raw_label.header.frame_id
            sizes = {}
            for output in OUTPUTS:
                raw = pixels(probe.wait_for(f"/seg_node/wifi/{output}", lambda m: m.header.frame_id == frame_id))
                message = probe.wait_for(f"/seg_node/wifi/{output}/compressed",
                                         lambda m: m.header.frame_id == frame_id)
                image = decoded(message)
                if output == "overlay":
                    assert cv2.PSNR(image, raw) > 30  # JPEG at quality 95: close (on a noisy test frame)
                else:
                    assert np.array_equal(image, raw), output  # PNG: lossless
                sizes[output] = (len(message.data), raw.nbytes)
            print("bytes per frame (compressed, raw):", sizes)
            assert all(compressed < raw for compressed, raw in sizes.values())
            streaming.set()
            ros.assert_clean_stop(process, log)
    finally:
        streaming.set()
        probe.close()
