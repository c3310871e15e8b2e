"""``sensor_msgs/CompressedImage`` <-> numpy: image_transport's ``compressed`` and ``compressedDepth`` formats.

Pure converters (message packages only, never ``rclpy`` nodes), with the conventions of
:mod:`semcorr_ros.ros.convert`: colour ``uint8 [H, W, 3]`` RGB, depth ``float32 [H, W]`` metres with NaN invalid.
JPEG and PNG are decoded with Pillow, restricted to those two formats; the image size is read from the file
header (PNG IHDR, JPEG SOF) and checked against ``max_pixels`` before Pillow decodes anything (decompression
bombs; Pillow's own ``MAX_IMAGE_PIXELS`` limit then never warns for a refused image). Every malformed message
raises :class:`~semcorr_ros.errors.InputError`; nothing else escapes (Pillow's many error types are wrapped).

Wire formats (as compressed_image_transport / compressed_depth_image_transport publish them):

- **compressed** (colour): ``format`` = ``"<encoding>; <jpeg|png> compressed <target>"``, e.g.
  ``"rgb8; jpeg compressed bgr8"``, ``"bgr8; png compressed bgr8"``, ``"mono8; jpeg compressed "`` (grey: empty
  target), or just ``"jpeg"`` / ``"png"`` from old publishers; ``data`` = the JPEG/PNG file. The publisher
  converts colour to the target ``bgr8`` and calls OpenCV's ``imencode``, which takes a BGR buffer and writes a
  *standard* file (true colours). So a standard decoder such as Pillow gives true RGB with no channel swap,
  whatever the source encoding; "bgr8" only names OpenCV's in-memory order. The stock subscriber treats a
  colour message whose target is *not* ``bgr*`` (e.g. ``"rgb8; jpeg compressed rgb8"``, which the stock
  publisher never writes) as holding a file with red and blue exchanged; :func:`compressed_to_rgb` does the
  same, so that such messages look as they do through image_transport.
- **compressedDepth**: ``format`` = ``"<16UC1|mono16|32FC1>; compressedDepth <png|rvl>"`` (older:
  ``"16UC1; compressedDepth"`` = png); ``data`` = a 12-byte little-endian header (int32 compression format,
  0 = inverse depth; float32 ``depthQuantA``, ``depthQuantB``) and then either a 16-bit greyscale PNG or, for
  ``rvl``, uint32 ``cols``, uint32 ``rows`` and an RVL stream (Wilson, "Fast Lossless Depth Image
  Compression", 2017). ``16UC1``: the 16-bit image holds raw depth units (0 invalid). ``32FC1``: it holds
  quantised inverse depth ``q = trunc(A / depth + B)``, 0 invalid, decoded as ``depth = A / (q - B)``; the
  publisher uses ``A = z0 (z0 + 1)``, ``B = 1 - A / depth_max`` (``depth_quantization`` z0 = 100,
  ``depth_max`` = 10 m by default), i.e. a step of ``depth^2 / A`` (2.5 mm at 5 m).
"""

from __future__ import annotations

import array
import io
import math
import re
import struct

import numpy as np
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from semcorr_ros.errors import ConfigError, InputError
from semcorr_ros.ros.convert import _header_or_default, _u8, depth_to_image
from semcorr_ros.ros.rvl import rvl_decode, rvl_encode

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "COMPRESSED_FORMATS",
    "COMPRESSED_DEPTH_FORMATS",
    "compressed_to_rgb",
    "compressed_depth_to_metres",
    "rgb_to_compressed",
    "depth_to_compressed_depth",
    "rvl_encode",
    "rvl_decode",
]

#: Default pixel limit (a 4K frame is 8.3 Mpx): larger images are refused before decoding.
DEFAULT_MAX_PIXELS = 16_000_000
#: Codecs of the ``compressed`` transport.
COMPRESSED_FORMATS = ("jpeg", "png")
#: Codecs of the ``compressedDepth`` transport.
COMPRESSED_DEPTH_FORMATS = ("png", "rvl")

_DEPTH_ENCODINGS = {"16UC1": "units", "mono16": "units", "32FC1": "inverse"}
_COLOR_SOURCE_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16", "rgba16", "bgra16")  # isColor()
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_HEADER = struct.Struct("<iff")  # compression format (0 = inverse depth), depthQuantA, depthQuantB
_INV_DEPTH = 0
_RVL_SIZE = struct.Struct("<II")  # cols, rows
# Pillow modes a colour message may decode to (16-bit and float modes are refused).
_COLOR_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")
_COMPRESSED_RE = re.compile(r"^(?:jpeg|jpg|png)\s+compressed\s*(\S*)\s*$")


# ----------------------------------------------------------------------------------------------- helpers


def _check_max_pixels(max_pixels: int) -> int:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels <= 0:
        raise ConfigError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    return int(max_pixels)


def _check_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"{what} has zero size: {width}x{height}")
    if width * height > max_pixels:
        raise InputError(f"{what} of {width}x{height} = {width * height} pixels exceeds max_pixels = {max_pixels} "
                         "(refused before decoding)")


def _png_header(data: bytes, what: str) -> tuple[int, int, int, int]:
    """``(width, height, bit_depth, colour_type)`` from a PNG's IHDR chunk, or :class:`InputError`."""
    if data[:8] != _PNG_SIGNATURE:
        raise InputError(f"{what} is not a PNG file (first bytes {data[:8].hex()})")
    if len(data) < 33:
        raise InputError(f"{what}: PNG truncated inside its header ({len(data)} bytes)")
    length, kind = struct.unpack_from(">I4s", data, 8)
    if kind != b"IHDR" or length != 13:
        raise InputError(f"{what}: PNG does not start with a 13-byte IHDR chunk (got {kind!r}, {length} bytes)")
    width, height, bit_depth, colour_type = struct.unpack_from(">IIBB", data, 16)
    return width, height, bit_depth, colour_type


def _jpeg_size(data: bytes, what: str) -> tuple[int, int]:
    """``(width, height)`` from a JPEG's frame header (SOFn marker segment), or :class:`InputError`."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise InputError(f"{what}: corrupt JPEG (no marker at byte {i})")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        if marker in _JPEG_SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack_from(">HH", data, i + 5)
            return width, height
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    raise InputError(f"{what}: JPEG without a frame header (SOF) before its image data")


def _decode(data: bytes, what: str, max_pixels: int) -> PILImage.Image:
    """Open JPEG/PNG ``data`` with Pillow, check its size against ``max_pixels`` and decode it."""
    try:
        im = PILImage.open(io.BytesIO(data), formats=["JPEG", "PNG"])
        _check_size(im.size[0], im.size[1], max_pixels, what)  # im.size is read from the header; nothing decoded
        im.load()
    except InputError:
        raise
    except PILImage.DecompressionBombError as exc:
        raise InputError(f"{what} is too large to decode: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 -- untrusted bytes: Pillow raises OSError, SyntaxError, struct.error,
        # zlib.error, ValueError, EOFError, IndexError, ...; any of them means the file is malformed.
        raise InputError(f"{what} could not be decoded ({type(exc).__name__}: {exc})") from exc
    return im


def _message_bytes(msg: CompressedImage) -> bytes:
    data = _u8(msg.data).tobytes()
    if not data:
        raise InputError(f"CompressedImage (format {msg.format!r}) has empty data")
    return data


def _compressed_message(header: Header | None, fmt: str, payload: bytes) -> CompressedImage:
    msg = CompressedImage(header=_header_or_default(header), format=fmt)
    msg.data = array.array("B", payload)
    return msg


# ----------------------------------------------------------------------------------------------- colour


def _swaps_red_blue(fmt: str) -> bool:
    """Check a ``compressed`` transport format string; True when the stock subscriber would exchange red and
    blue (a colour source encoding with a target other than ``bgr*``)."""
    text = fmt.strip()
    if ";" not in text:  # old publishers: just the codec
        if text.lower() in ("jpeg", "jpg", "png"):
            return False
        raise InputError(f"unsupported CompressedImage format {fmt!r}; supported: {', '.join(COMPRESSED_FORMATS)} "
                         "(optionally as '<encoding>; <codec> compressed <target>')")
    encoding, rest = (part.strip() for part in text.split(";", 1))
    if "compresseddepth" in rest.lower():
        raise InputError(f"CompressedImage format {fmt!r} is a compressedDepth image: use compressed_depth_to_metres")
    m = _COMPRESSED_RE.match(rest.lower())
    if m is None:
        raise InputError(f"unsupported CompressedImage format {fmt!r}; supported: '<encoding>; <codec> compressed "
                         f"<target>' with codec {' or '.join(COMPRESSED_FORMATS)}")
    return encoding in _COLOR_SOURCE_ENCODINGS and not m.group(1).startswith("bgr")


def compressed_to_rgb(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a ``compressed`` transport image (JPEG or PNG) to RGB.

    Args:
        msg: CompressedImage with a ``format`` as described in the module docstring (``"jpeg"``, ``"png"``,
            ``"rgb8; jpeg compressed bgr8"``, ``"mono8; png compressed "``, ...). The file type is taken from
            the data (JPEG or PNG; anything else is refused), the format string only has to name one of them.
        max_pixels: the largest ``width * height`` accepted; checked from the file header before decoding.

    Returns:
        ``uint8 [H, W, 3]`` RGB, a new array: grey replicated, alpha dropped, palette expanded.

    Raises:
        InputError: empty data, an unsupported format string, data that is neither JPEG nor PNG, a 16-bit or
            float image, more than ``max_pixels`` pixels, or a truncated/corrupt file.
        ConfigError: ``max_pixels`` not a positive integer.
    """
    limit = _check_max_pixels(max_pixels)
    swap = _swaps_red_blue(msg.format)
    data = _message_bytes(msg)
    what = f"CompressedImage ({msg.format.strip()})"
    if data.startswith(_PNG_SIGNATURE):
        width, height, bit_depth, _ = _png_header(data, what)
        _check_size(width, height, limit, what)
        if bit_depth > 8:
            raise InputError(f"{what} is a {bit_depth}-bit PNG; colour images must have 8 bits per channel")
    elif data.startswith(_JPEG_SOI):
        _check_size(*_jpeg_size(data, what), limit, what)
    else:
        raise InputError(f"{what}: data is neither a JPEG nor a PNG file (first bytes {data[:8].hex()})")
    im = _decode(data, what, limit)
    if im.mode not in _COLOR_MODES:
        raise InputError(f"{what} decodes to Pillow mode {im.mode!r}; supported: {', '.join(_COLOR_MODES)}")
    try:
        rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 -- see _decode
        raise InputError(f"{what} could not be converted to RGB ({type(exc).__name__}: {exc})") from exc
    if swap:
        rgb = rgb[..., ::-1]
    return np.array(rgb, dtype=np.uint8, order="C", copy=True)


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", header: Header | None = None, *,
                      quality: int = 90) -> CompressedImage:
    """Encode an RGB (or grey) image as compressed_image_transport publishes it (inverse of
    :func:`compressed_to_rgb`).

    Args:
        rgb: ``uint8 [H, W, 3]`` RGB, or ``uint8 [H, W]`` grey.
        fmt: ``jpeg`` or ``png``.
        header: the message header (used as is); an empty one when None.
        quality: JPEG quality 1..95 (ignored for PNG).

    Returns:
        CompressedImage with ``format`` ``"rgb8; <fmt> compressed bgr8"`` (colour) or ``"mono8; <fmt> compressed "``
        (grey) and a standard JPEG/PNG file as ``data``.

    Raises:
        InputError: not a ``uint8`` ``[H, W, 3]`` / ``[H, W]`` array, or empty.
        ConfigError: unknown ``fmt`` or a ``quality`` outside 1..95.
    """
    if fmt not in COMPRESSED_FORMATS:
        raise ConfigError(f"unknown compressed format {fmt!r}; valid: {', '.join(COMPRESSED_FORMATS)}")
    if not (isinstance(quality, (int, np.integer)) and 1 <= quality <= 95):
        raise ConfigError(f"quality must be an integer in 1..95, got {quality!r}")
    a = np.asarray(rgb)
    grey = a.ndim == 2
    if a.dtype != np.uint8 or not (grey or (a.ndim == 3 and a.shape[2] == 3)):
        raise InputError(f"rgb_to_compressed expects uint8 [H, W, 3] or [H, W], got {a.dtype} {list(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"rgb_to_compressed got an empty image of shape {list(a.shape)}")
    buf = io.BytesIO()
    im = PILImage.fromarray(np.ascontiguousarray(a))  # uint8 [H, W] -> "L", [H, W, 3] -> "RGB"
    if fmt == "jpeg":
        im.save(buf, format="JPEG", quality=int(quality))
    else:
        im.save(buf, format="PNG", compress_level=3)
    target = "mono8; {} compressed " if grey else "rgb8; {} compressed bgr8"
    return _compressed_message(header, target.format(fmt), buf.getvalue())


# ----------------------------------------------------------------------------------------------- depth


def _parse_depth_format(fmt: str) -> tuple[str, str]:
    """``(encoding, codec)`` of a ``compressedDepth`` format string."""
    text = fmt.strip()
    encoding, _, rest = (part.strip() for part in text.partition(";"))
    if encoding not in _DEPTH_ENCODINGS:
        raise InputError(f"unsupported compressedDepth encoding {encoding!r} in format {fmt!r}; supported: "
                         f"{', '.join(_DEPTH_ENCODINGS)}")
    if not rest:  # the oldest publishers: just the encoding, png
        return encoding, "png"
    m = re.fullmatch(r"compressedDepth(?:\s+(\S+))?", rest)
    codec = None if m is None else (m.group(1) or "png")
    if codec not in COMPRESSED_DEPTH_FORMATS:
        raise InputError(f"unsupported compressedDepth format {fmt!r}; supported: '<encoding>; compressedDepth "
                         f"<codec>' with codec {' or '.join(COMPRESSED_DEPTH_FORMATS)}")
    return encoding, codec


def _png16(data: bytes, what: str, max_pixels: int) -> np.ndarray:
    """A 16-bit greyscale PNG -> ``uint16 [H, W]``."""
    width, height, bit_depth, colour_type = _png_header(data, what)
    _check_size(width, height, max_pixels, what)
    if bit_depth != 16 or colour_type != 0:
        raise InputError(f"{what}: depth PNG must be 16-bit greyscale, got bit depth {bit_depth}, colour type "
                         f"{colour_type}")
    im = _decode(data, what, max_pixels)
    arr = np.asarray(im)
    if arr.shape != (height, width) or arr.dtype.kind not in "iu" or arr.min(initial=0) < 0 or \
            arr.max(initial=0) > 65535:
        raise InputError(f"{what}: decoded to {arr.dtype} {list(arr.shape)}, expected uint16 [{height}, {width}]")
    return arr.astype(np.uint16)


def compressed_depth_to_metres(msg: CompressedImage, depth_scale: float = 0.001,
                               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a compressed_depth_image_transport message to metres.

    Args:
        msg: CompressedImage with ``format`` ``"16UC1; compressedDepth png"``, ``"32FC1; compressedDepth png"``,
            ``"... compressedDepth rvl"``, the older ``"16UC1; compressedDepth"`` (png), ``mono16`` like 16UC1.
        depth_scale: metres per unit of 16UC1/mono16 (RealSense: 0.001); ignored for 32FC1.
        max_pixels: the largest ``width * height`` accepted; checked from the header before decoding.

    Returns:
        ``float32 [H, W]`` metres, NaN where invalid (0 in the image, or a non-positive / non-finite decoded
        32FC1 depth).

    Raises:
        InputError: unknown format/encoding, header too short, no image after it, not a 16-bit greyscale PNG,
            a malformed RVL stream, more than ``max_pixels`` pixels, a compression format other than inverse
            depth (32FC1), or non-finite / zero quantisation parameters (32FC1).
        ConfigError: ``depth_scale`` not finite and positive, ``max_pixels`` not a positive integer.
    """
    if not (isinstance(depth_scale, (int, float, np.floating, np.integer)) and math.isfinite(depth_scale)
            and depth_scale > 0):
        raise ConfigError(f"depth_scale must be a finite number > 0 (metres per unit), got {depth_scale!r}")
    limit = _check_max_pixels(max_pixels)
    encoding, codec = _parse_depth_format(msg.format)
    data = _message_bytes(msg)
    what = f"compressedDepth image ({msg.format.strip()})"
    if len(data) <= _HEADER.size:
        raise InputError(f"{what}: data of {len(data)} bytes is too short for the {_HEADER.size}-byte header "
                         "and an image")
    kind, quant_a, quant_b = _HEADER.unpack_from(data, 0)
    inverse = _DEPTH_ENCODINGS[encoding] == "inverse"
    if inverse and kind != _INV_DEPTH:
        raise InputError(f"{what}: compression format {kind} in the header; only {_INV_DEPTH} (inverse depth) exists")
    if inverse and not (math.isfinite(quant_a) and math.isfinite(quant_b) and quant_a != 0):
        raise InputError(f"{what}: bad quantisation parameters depthQuantA={quant_a}, depthQuantB={quant_b}")
    payload = data[_HEADER.size:]
    units = _png16(payload, what, limit) if codec == "png" else _rvl_payload(payload, what, limit)
    if not inverse:  # raw units; the header's parameters are unused (and were uninitialised in old publishers)
        out = np.multiply(units, np.float32(depth_scale), dtype=np.float32)
        out[units == 0] = np.nan
        return out
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.float32(quant_a) / (units.astype(np.float32) - np.float32(quant_b))
        out[(units == 0) | ~(out > 0) | ~np.isfinite(out)] = np.nan
    return out


def depth_to_compressed_depth(depth_m: np.ndarray, encoding: str = "16UC1", header: Header | None = None,
                              depth_scale: float = 0.001, *, fmt: str = "png", depth_max: float = 10.0,
                              depth_quantization: float = 100.0) -> CompressedImage:
    """Encode depth as compressed_depth_image_transport publishes it (inverse of
    :func:`compressed_depth_to_metres`).

    Args:
        depth_m: ``[H, W]`` real-valued depth in metres; NaN, inf and ``<= 0`` are invalid.
        encoding: ``16UC1`` (``round(depth / depth_scale)`` units, exact up to the unit) or ``32FC1`` (quantised
            inverse depth, a step of ``depth^2 / (z0 (z0 + 1))``).
        header: the message header (used as is); an empty one when None.
        depth_scale: metres per 16UC1 unit; ignored for 32FC1.
        fmt: ``png`` or ``rvl``.
        depth_max: metres; deeper pixels are written as invalid (the transport's ``depth_max``, default 10).
        depth_quantization: the transport's ``depth_quantization`` z0 for 32FC1 (default 100).

    Returns:
        CompressedImage with ``format`` ``"<encoding>; compressedDepth <fmt>"`` and the 12-byte header + image.
        Invalid pixels, and 32FC1 depths whose quantised value does not fit 1..65535 (closer than
        ``A / (65535 - B)``, 0.15 m by default), are written as 0 (invalid).

    Raises:
        InputError: not a real-valued non-empty ``[H, W]`` array.
        ConfigError: unknown ``encoding``/``fmt``; non-finite or non-positive ``depth_scale``, ``depth_max`` or
            ``depth_quantization``.
    """
    if encoding not in ("16UC1", "32FC1"):
        raise ConfigError(f"unknown compressedDepth encoding {encoding!r}; valid: 16UC1, 32FC1")
    if fmt not in COMPRESSED_DEPTH_FORMATS:
        raise ConfigError(f"unknown compressedDepth format {fmt!r}; valid: {', '.join(COMPRESSED_DEPTH_FORMATS)}")
    for name, value in (("depth_max", depth_max), ("depth_quantization", depth_quantization)):
        if not (isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    # depth_to_image validates the array and depth_scale; invalid depths become 0 (16UC1) or NaN (32FC1).
    image = depth_to_image(depth_m, encoding, depth_scale=depth_scale)
    shape = (image.height, image.width)
    if encoding == "16UC1":
        units = np.frombuffer(image.data, dtype=np.uint16).reshape(shape).copy()
        units[units * np.float64(depth_scale) > depth_max] = 0
        quant_a = quant_b = np.float32(0.0)
    else:
        metres = np.frombuffer(image.data, dtype=np.float32).reshape(shape)
        z0 = np.float32(depth_quantization)
        quant_a = z0 * (z0 + np.float32(1.0))
        quant_b = np.float32(1.0) - quant_a / np.float32(depth_max)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            q = np.trunc(quant_a / metres + quant_b)  # float32 arithmetic, truncated like the C++ conversion
            ok = (metres < np.float32(depth_max)) & (q >= 1) & (q <= 65535)  # False for NaN
        units = np.where(ok, q, 0).astype(np.uint16)
    if fmt == "png":
        buf = io.BytesIO()
        PILImage.fromarray(units).save(buf, format="PNG", compress_level=1)
        body = buf.getvalue()
    else:
        body = _RVL_SIZE.pack(units.shape[1], units.shape[0]) + rvl_encode(units)
    head = _HEADER.pack(_INV_DEPTH, float(quant_a), float(quant_b))
    return _compressed_message(header, f"{encoding}; compressedDepth {fmt}", head + body)


# ----------------------------------------------------------------------------------------------- RVL


def _rvl_payload(payload: bytes, what: str, max_pixels: int) -> np.ndarray:
    """``cols, rows`` (uint32 LE) + RVL stream -> ``uint16 [rows, cols]``."""
    if len(payload) < _RVL_SIZE.size:
        raise InputError(f"{what}: RVL data of {len(payload)} bytes is too short for its 8-byte size header")
    cols, rows = _RVL_SIZE.unpack_from(payload, 0)
    _check_size(cols, rows, max_pixels, what)
    return rvl_decode(payload[_RVL_SIZE.size:], rows * cols, what).reshape(rows, cols)
