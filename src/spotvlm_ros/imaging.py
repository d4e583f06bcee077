"""Image decoding and validation shared by the nodes, the server and the tools (no ROS)."""

from __future__ import annotations

import numpy as np

SUPPORTED_ENCODINGS = ("bgr8", "rgb8", "mono8")
MAX_PIXELS_DEFAULT = 4096 * 4096


class ImageError(ValueError):
    """An image that cannot be used; the message says what is wrong with it."""


def decode_compressed(data: bytes, max_pixels: int = MAX_PIXELS_DEFAULT) -> np.ndarray:
    """Decode JPEG/PNG/... bytes to an (H, W, 3) RGB uint8 array."""
    import cv2

    if not data:
        raise ImageError("compressed image is empty (0 bytes)")
    buffer = np.frombuffer(data, dtype=np.uint8)
    # Read the header first so a huge image is refused before it is decoded.
    header = cv2.imdecode(buffer, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if header is None:
        raise ImageError(f"cannot decode {len(data)} bytes as an image (corrupt or not an image)")
    if header.shape[0] * header.shape[1] * 64 > max_pixels:
        raise ImageError(
            f"image of about {header.shape[1] * 8}x{header.shape[0] * 8} px exceeds "
            f"the limit of {max_pixels} pixels"
        )
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"cannot decode {len(data)} bytes as an image (corrupt or truncated)")
    if bgr.shape[0] * bgr.shape[1] > max_pixels:
        raise ImageError(f"image of {bgr.shape[1]}x{bgr.shape[0]} px exceeds {max_pixels} pixels")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def raw_to_rgb(
    data: bytes,
    width: int,
    height: int,
    encoding: str,
    step: int,
    max_pixels: int = MAX_PIXELS_DEFAULT,
) -> np.ndarray:
    """An (H, W, 3) RGB uint8 array from a raw image buffer (sensor_msgs/Image fields)."""
    if encoding not in SUPPORTED_ENCODINGS:
        raise ImageError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    if width <= 0 or height <= 0:
        raise ImageError(f"image size {width}x{height} is empty")
    if width * height > max_pixels:
        raise ImageError(f"image of {width}x{height} px exceeds the limit of {max_pixels} pixels")
    channels = 1 if encoding == "mono8" else 3
    if step < width * channels:
        raise ImageError(f"step {step} is smaller than width*channels = {width * channels}")
    if len(data) < step * height:
        raise ImageError(
            f"image data is truncated: {len(data)} bytes for {height} rows of {step} bytes"
        )
    rows = np.frombuffer(data, dtype=np.uint8, count=step * height).reshape(height, step)
    pixels = rows[:, : width * channels].reshape(height, width, channels)
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if encoding == "bgr8":
        return np.ascontiguousarray(pixels[:, :, ::-1])
    return np.ascontiguousarray(pixels)
