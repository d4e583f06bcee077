"""Image decoding and validation: every bad input gets a clear ImageError."""

from __future__ import annotations

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
