"""Image decoding and validation shared by the nodes, the server and the tools (no ROS)."""

from __future__ import annotations

import array

import numpy as np

SUPPORTED_ENCODINGS = ("bgr8", "rgb8", "mono8")
MAX_PIXELS_DEFAULT = 4096 * 4096


class ImageError(ValueError):
    """An image that cannot be used; the message says what is wrong with it."""


def swap_red_blue(image: np.ndarray) -> np.ndarray:
    """RGB from BGR or BGR from RGB, as a new contiguous (H, W, 3) uint8 array.

    OpenCV's channel swap: some 50 times faster than copying numpy's ``[:, :, ::-1]`` view
    (0.1 ms against 6 ms for a 1600x900 frame), which matters on the per-frame path.
    """
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


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
    return swap_red_blue(bgr)


def raw_to_rgb(
    data: bytes | bytearray | memoryview | array.array[int],
    width: int,
    height: int,
    encoding: str,
    step: int,
    max_pixels: int = MAX_PIXELS_DEFAULT,
) -> np.ndarray:
    """An (H, W, 3) RGB uint8 array from a raw image buffer (sensor_msgs/Image fields).

    ``data`` is read in place (bytes, or the message's own array); the result never shares
    memory with it.
    """
    import cv2

    if encoding not in SUPPORTED_ENCODINGS:
        raise ImageError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    if width <= 0 or height <= 0:
        raise ImageError(f"image size {width}x{height} is empty")
    if width * height > max_pixels:
        raise ImageError(f"image of {width}x{height} px exceeds the limit of {max_pixels} pixels")
    channels = 1 if encoding == "mono8" else 3
    row = width * channels
    size = memoryview(data).nbytes
    if step < row:
        raise ImageError(
            f"step {step} is smaller than a row of {width} px x {channels} channel(s) = {row} "
            f"bytes (data: {size} bytes): the message's step field is wrong"
        )
    if size < step * height:
        if size >= row * height:  # the pixels are all there: the rows are shorter than step
            raise ImageError(
                f"step {step} does not fit the data: {size} bytes hold {height} rows of "
                f"{row} bytes ({width} px x {channels} channel(s)), not of {step}: the "
                "message's step field is wrong"
            )
        raise ImageError(
            f"image data is truncated: {size} bytes for {height} rows of step {step} "
            f"({step * height} bytes expected)"
        )
    rows = np.frombuffer(data, dtype=np.uint8, count=step * height).reshape(height, step)
    pixels = rows[:, : width * channels].reshape(height, width, channels)
    if encoding == "mono8":
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    if encoding == "bgr8":
        return swap_red_blue(pixels)
    return pixels.copy()
