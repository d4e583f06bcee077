"""Image decoding and validation: every bad input gets a clear ImageError."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

from spotvlm_ros.imaging import ImageError, decode_compressed, raw_to_rgb


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def test_decode_jpeg_gives_rgb() -> None:
    bgr = np.zeros((40, 60, 3), np.uint8)
    bgr[:, :, 2] = 255  # red in BGR
    rgb = decode_compressed(jpeg(bgr))
    assert rgb.shape == (40, 60, 3)
    assert rgb[20, 30, 0] > 200
    assert rgb[20, 30, 2] < 50


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not an image", "cannot decode"),
        (jpeg(np.zeros((40, 60, 3), np.uint8))[:20], "cannot decode"),
    ],
)
def test_bad_compressed_images(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_compressed(data)


def test_huge_compressed_image_is_refused_by_its_size() -> None:
    with pytest.raises(ImageError, match="exceeds"):
        decode_compressed(jpeg(np.zeros((800, 800, 3), np.uint8)), max_pixels=100_000)


def test_raw_encodings() -> None:
    bgr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(raw_to_rgb(bgr.tobytes(), 3, 2, "bgr8", 9), bgr[:, :, ::-1])
    assert np.array_equal(raw_to_rgb(bgr.tobytes(), 3, 2, "rgb8", 9), bgr)
    mono = np.array([[1, 2], [3, 4]], np.uint8)
    assert raw_to_rgb(mono.tobytes(), 2, 2, "mono8", 2)[1, 1].tolist() == [4, 4, 4]


def test_row_padding_is_skipped() -> None:
    padded = np.zeros((2, 8), np.uint8)
    padded[:, :6] = 7
    out = raw_to_rgb(padded.tobytes(), 2, 2, "rgb8", 8)
    assert out.shape == (2, 2, 3)
    assert (out == 7).all()


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "mono8"])
def test_received_buffers_with_padded_rows_are_read_in_place_and_never_shared(
    encoding: str,
) -> None:
    rng = np.random.default_rng(0)
    channels = 1 if encoding == "mono8" else 3
    pixels = rng.integers(0, 256, (5, 7, channels), dtype=np.uint8)
    rows = np.zeros((5, 7 * channels + 3), np.uint8)  # 3 bytes of padding per row
    rows[:, : 7 * channels] = pixels.reshape(5, -1)
    received = array.array("B", rows.tobytes())  # what a subscription hands over
    out = raw_to_rgb(received, 7, 5, encoding, rows.shape[1])
    expected = {
        "bgr8": pixels[:, :, ::-1],
        "rgb8": pixels,
        "mono8": np.repeat(pixels, 3, axis=2),
    }[encoding]
    assert out.shape == (5, 7, 3)
    assert out.flags.c_contiguous
    assert np.array_equal(out, expected)
    out[:] = 0  # drawing on the result must not change the message
    assert bytes(received) == rows.tobytes()


def test_image_messages_round_trip_from_hand_built_data() -> None:
    from spotvlm_ros.ros.convert import image_to_rgb, rgb_to_image

    rgb = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    for encoding in ("bgr8", "rgb8"):
        msg = rgb_to_image(rgb, encoding)
        assert (msg.width, msg.height, msg.step) == (6, 4, 18)
        assert np.array_equal(image_to_rgb(msg, 100), rgb)
    with pytest.raises(ImageError, match="exceeds"):
        image_to_rgb(rgb_to_image(rgb), 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"encoding": "bayer_rggb8"}, "unsupported encoding"),
        ({"encoding": "16UC1"}, "unsupported encoding"),
        ({"width": 0}, "empty"),
        ({"data": b"\x00" * 10}, "truncated"),
        ({"step": 2}, "step"),
        ({"width": 8000, "height": 8000, "step": 24000}, "exceeds"),
    ],
)
def test_bad_raw_images(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "data": b"\x00" * 27,
        "width": 3,
        "height": 3,
        "encoding": "rgb8",
        "step": 9,
    }
    args.update(kwargs)
    with pytest.raises(ImageError, match=message):
        raw_to_rgb(**args)  # type: ignore[arg-type]


def test_a_wrong_step_is_named_as_the_step_not_as_truncated_data() -> None:
    """360x480 rgb8 data (518400 bytes, rows of 1080) with step 1430: every pixel is there,
    the step field is what is wrong, and the message says so, naming it."""
    data = bytes(480 * 360 * 3)
    with pytest.raises(ImageError) as too_long:
        raw_to_rgb(data, 360, 480, "rgb8", 1430)
    assert "step 1430 does not fit the data" in str(too_long.value)
    assert "480 rows of 1080 bytes" in str(too_long.value)
    with pytest.raises(ImageError) as too_short:
        raw_to_rgb(data, 360, 480, "rgb8", 1000)
    assert "step 1000 is smaller than a row of 360 px x 3 channel(s) = 1080" in str(too_short.value)
    with pytest.raises(ImageError, match=r"truncated: 1000 bytes for 480 rows of step 1080"):
        raw_to_rgb(data[:1000], 360, 480, "rgb8", 1080)
