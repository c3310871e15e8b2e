"""Tests of semcorr_ros.ros.compressed: image_transport's compressed / compressedDepth wire formats, round trips,
hand-built messages, RVL against a plain transcription of the published algorithm, and malformed input (every
failure an InputError)."""

from __future__ import annotations

import array
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from semcorr_ros.errors import ConfigError, InputError
from semcorr_ros.ros.compressed import (
    compressed_depth_to_metres,
    compressed_to_rgb,
    depth_to_compressed_depth,
    rgb_to_compressed,
    rvl_decode,
    rvl_encode,
)

A_DEFAULT, B_DEFAULT = 100.0 * 101.0, 1.0 - 100.0 * 101.0 / 10.0  # the transport's defaults: z0 = 100, 10 m


def message(fmt: str, data: bytes) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", data)
    return msg


def smooth_rgb(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], axis=2).astype(np.uint8)


def pillow_file(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_file(width: int, height: int, bit_depth: int, colour_type: int, raw: bytes) -> bytes:
    """A PNG built by hand (any IHDR, IDAT = zlib(raw)): for sizes and depths Pillow would not write."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def depth_message(encoding: str, body: bytes, a: float = 0.0, b: float = 0.0, kind: int = 0,
                  codec: str = "png") -> CompressedImage:
    return message(f"{encoding}; compressedDepth {codec}", struct.pack("<iff", kind, a, b) + body)


# ------------------------------------------------------------------------------------------ colour

def test_png_round_trip_is_exact_and_named_like_the_transport():
    rgb = smooth_rgb()
    msg = rgb_to_compressed(rgb, "png", Header(frame_id="cam"))
    assert msg.format == "rgb8; png compressed bgr8" and msg.header.frame_id == "cam"
    out = compressed_to_rgb(msg)
    assert out.dtype == np.uint8 and out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_round_trip_keeps_true_colours():
    rgb = smooth_rgb()
    rgb[:8, :8] = (255, 0, 0)  # a pure red corner: a channel swap would make it blue
    msg = rgb_to_compressed(rgb, "jpeg", quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8" and bytes(msg.data[:3]) == b"\xff\xd8\xff"
    out = compressed_to_rgb(msg)
    assert np.abs(out.astype(int) - rgb).mean() < 2.0
    r, g, b = out[2:6, 2:6].reshape(-1, 3).mean(axis=0)
    assert r > 230 and g < 25 and b < 25


def test_grey_round_trip_replicates_channels():
    grey = smooth_rgb()[..., 0]
    msg = rgb_to_compressed(grey, "png")
    assert msg.format == "mono8; png compressed "  # the publisher's string for grey: empty target
    out = compressed_to_rgb(msg)
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("fmt", ["png", "PNG", "jpeg", "bgr8; png compressed bgr8", "rgba8; png compressed bgr8",
                                 "bgra8 ; png compressed bgr8", "rgb16; png compressed bgr16",
                                 "mono8; png compressed ", "8UC3; png compressed"])
def test_format_strings_that_decode_without_a_swap(fmt):
    rgb = smooth_rgb()
    np.testing.assert_array_equal(compressed_to_rgb(message(fmt, pillow_file(rgb, "PNG"))), rgb)


@pytest.mark.parametrize("fmt", ["rgb8; png compressed rgb8", "bgr8; png compressed rgb8", "rgba8; png compressed "])
def test_colour_without_a_bgr_target_is_swapped_like_the_stock_subscriber(fmt):
    rgb = smooth_rgb()
    np.testing.assert_array_equal(compressed_to_rgb(message(fmt, pillow_file(rgb, "PNG"))), rgb[..., ::-1])


def test_palette_alpha_and_1bit_pngs_convert_to_rgb():
    rgb = smooth_rgb()
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(compressed_to_rgb(message("png", pillow_file(rgba, "PNG"))), rgb)
    pal = PILImage.fromarray(rgb).quantize(16)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    np.testing.assert_array_equal(compressed_to_rgb(message("png", buf.getvalue())), np.asarray(pal.convert("RGB")))
    bits = png_file(8, 1, 1, 0, b"\x00\xa5")  # one row: filter 0, bits 10100101
    np.testing.assert_array_equal(compressed_to_rgb(message("png", bits))[0, :, 0],
                                  [255, 0, 255, 0, 0, 255, 0, 255])


@pytest.mark.parametrize("fmt,match", [("qoi", "unsupported"), ("tiff", "unsupported"), ("", "unsupported"),
                                       ("rgb8; webp compressed bgr8", "unsupported"),
                                       ("16UC1; compressedDepth png", "compressed_depth_to_metres")])
def test_unknown_formats_are_refused(fmt, match):
    with pytest.raises(InputError, match=match):
        compressed_to_rgb(message(fmt, pillow_file(smooth_rgb(), "PNG")))


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP"])
def test_other_file_types_are_refused(fmt):
    data = pillow_file(smooth_rgb(), fmt)
    with pytest.raises(InputError, match="neither a JPEG nor a PNG"):
        compressed_to_rgb(message("jpeg", data))


def test_empty_random_and_truncated_data_raise_input_errors():
    with pytest.raises(InputError, match="empty data"):
        compressed_to_rgb(message("jpeg", b""))
    rng = np.random.default_rng(0)
    with pytest.raises(InputError):
        compressed_to_rgb(message("jpeg", rng.bytes(500)))
    for fmt in ("JPEG", "PNG"):
        data = pillow_file(smooth_rgb(), fmt)
        for cut in (3, 20, 40, len(data) // 2, len(data) - 40):
            with pytest.raises(InputError):
                compressed_to_rgb(message(fmt.lower(), data[:cut]))
    # a PNG cut only in its trailer (checksums, IEND) still holds every pixel: decoded exactly, or refused
    data = pillow_file(smooth_rgb(), "PNG")
    for cut in range(len(data) - 40, len(data)):
        try:
            np.testing.assert_array_equal(compressed_to_rgb(message("png", data[:cut])), smooth_rgb())
        except InputError:
            pass


def corrupted(sources: list[bytes], n: int, seed: int, keep: int = 0):
    """``n`` random corruptions of ``sources`` (in turn): a few bytes after ``keep`` overwritten, every third one
    also truncated. Yields ``(source index, bytes)``."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        data = bytearray(sources[i % len(sources)])
        for pos in rng.integers(keep, len(data), int(rng.integers(1, 6))):
            data[pos] = int(rng.integers(0, 256))
        if i % 3 == 0:
            data = data[: int(rng.integers(1, len(data)))]
        yield i % len(sources), bytes(data)


def test_corrupted_files_never_raise_anything_but_input_error():
    sources = [pillow_file(smooth_rgb(), "JPEG"), pillow_file(smooth_rgb(), "PNG"),
               pillow_file(smooth_rgb(), "JPEG", progressive=True)]
    for _, data in corrupted(sources, 300, seed=1):
        try:
            out = compressed_to_rgb(message("jpeg", data), max_pixels=10**6)
        except InputError:
            continue
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


def test_png_bomb_is_refused_before_decoding():
    bomb = png_file(30000, 30000, 8, 2, b"\x00" * 64)  # declares 900 Mpx, holds 64 bytes
    with pytest.raises(InputError, match="exceeds max_pixels"):
        compressed_to_rgb(message("png", bomb))
    # a corrupt IDAT would fail to decode: the size error proves the check comes first
    small = png_file(100, 100, 8, 2, b"garbage")
    with pytest.raises(InputError, match="exceeds max_pixels"):
        compressed_to_rgb(message("png", small), max_pixels=9999)
    with pytest.raises(InputError, match="could not be decoded"):
        compressed_to_rgb(message("png", small))
    # past our limit Pillow's own bomb check answers; still an InputError
    with pytest.raises(InputError):
        compressed_to_rgb(message("png", bomb), max_pixels=10**10)


def test_jpeg_bomb_is_refused_before_decoding():
    data = bytearray(pillow_file(smooth_rgb(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)  # height, width
    with pytest.raises(InputError, match="60000x60000"):
        compressed_to_rgb(message("jpeg", bytes(data)))


def test_exact_pixel_limit_is_inclusive():
    data = pillow_file(smooth_rgb(10, 20), "PNG")
    assert compressed_to_rgb(message("png", data), max_pixels=200).shape == (10, 20, 3)
    with pytest.raises(InputError, match="exceeds"):
        compressed_to_rgb(message("png", data), max_pixels=199)


def test_16_bit_pngs_are_refused_for_colour():
    rgb16 = png_file(2, 2, 16, 2, (b"\x00" + b"\x12\x34" * 6) * 2)
    with pytest.raises(InputError, match="16-bit"):
        compressed_to_rgb(message("rgb16; png compressed bgr16", rgb16))
    grey16 = pillow_file(np.full((4, 4), 1000, np.uint16), "PNG")
    with pytest.raises(InputError, match="16-bit"):
        compressed_to_rgb(message("mono16; png compressed ", grey16))


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "100"])
def test_bad_max_pixels_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        compressed_to_rgb(message("png", pillow_file(smooth_rgb(), "PNG")), max_pixels=bad)


def test_rgb_to_compressed_rejects_bad_input():
    with pytest.raises(ConfigError):
        rgb_to_compressed(smooth_rgb(), "webp")
    with pytest.raises(ConfigError):
        rgb_to_compressed(smooth_rgb(), "jpeg", quality=0)
    with pytest.raises(InputError):
        rgb_to_compressed(smooth_rgb().astype(np.float32))
    with pytest.raises(InputError):
        rgb_to_compressed(np.zeros((0, 4, 3), np.uint8))


# ------------------------------------------------------------------------------------------ depth

def depth_scene(h: int = 60, w: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.3, 8.0, (h, w)).astype(np.float32)
    d[rng.uniform(size=(h, w)) < 0.15] = np.nan
    d[:5, :7] = np.nan  # a run of holes
    return d


@pytest.mark.parametrize("codec", ["png", "rvl"])
def test_16uc1_round_trip_is_exact_in_units(codec):
    mm = np.random.default_rng(2).integers(1, 9000, (60, 80)).astype(np.uint16)
    mm[10:20, 5:50] = 0
    depth = np.where(mm == 0, np.nan, mm * 0.001)
    msg = depth_to_compressed_depth(depth, "16UC1", Header(frame_id="d"), fmt=codec)
    assert msg.format == f"16UC1; compressedDepth {codec}" and msg.header.frame_id == "d"
    out = compressed_depth_to_metres(msg)
    assert out.dtype == np.float32 and out.shape == (60, 80)
    np.testing.assert_array_equal(np.isnan(out), mm == 0)
    np.testing.assert_array_equal(out[mm > 0], (mm[mm > 0] * np.float32(0.001)).astype(np.float32))


@pytest.mark.parametrize("codec", ["png", "rvl"])
def test_32fc1_round_trip_within_the_quantisation_step(codec):
    d = depth_scene()
    d[0, 10], d[0, 11], d[0, 12] = 0.1, 12.0, -1.0  # too close to quantise, beyond depth_max, invalid
    msg = depth_to_compressed_depth(d, "32FC1", fmt=codec)
    assert msg.format == f"32FC1; compressedDepth {codec}"
    assert struct.unpack("<iff", bytes(msg.data[:12])) == (0, A_DEFAULT, B_DEFAULT)
    out = compressed_depth_to_metres(msg)
    valid = np.isfinite(d) & (d > 0.16) & (d < 10.0)
    np.testing.assert_array_equal(np.isfinite(out), valid)
    err = np.abs(out[valid] - d[valid])
    step = d[valid] ** 2 / A_DEFAULT
    assert (err <= step * 1.001 + 1e-6).all() and err.max() > 0  # truncation: within one step, not exact


def test_32fc1_hand_computed_value():
    # depth 1 m: q = trunc(10100 / 1 - 1009) = 9091; 10100 / (9091 + 1009) = 1 exactly
    msg = depth_to_compressed_depth(np.array([[1.0, 2.0]], np.float32), "32FC1")
    raw = np.asarray(PILImage.open(io.BytesIO(bytes(msg.data[12:]))))
    np.testing.assert_array_equal(raw, [[9091, 4041]])  # 10100 / 2 - 1009 = 4041
    np.testing.assert_array_equal(compressed_depth_to_metres(msg), [[1.0, 2.0]])


def test_hand_built_messages_decode():
    units = np.array([[0, 1000, 65535], [250, 0, 1]], np.uint16)
    png = pillow_file(units, "PNG")
    for fmt in ("16UC1; compressedDepth png", "16UC1; compressedDepth", "mono16; compressedDepth png", "16UC1",
                "16UC1;compressedDepth png"):
        out = compressed_depth_to_metres(message(fmt, struct.pack("<iff", 0, 0, 0) + png), depth_scale=0.0001)
        np.testing.assert_allclose(out, [[np.nan, 0.1, 6.5535], [0.025, np.nan, 0.0001]], rtol=1e-6)
    # 32FC1 with other quantisation parameters than the defaults
    inv = np.array([[0, 10, 1000]], np.uint16)
    out = compressed_depth_to_metres(depth_message("32FC1", pillow_file(inv, "PNG"), a=500.0, b=-2.0))
    np.testing.assert_allclose(out, [[np.nan, 500 / 12, 500 / 1002]], rtol=1e-6)
    # parameters decoding to a non-positive depth give NaN, not a negative depth
    out = compressed_depth_to_metres(depth_message("32FC1", pillow_file(inv, "PNG"), a=500.0, b=20.0))
    assert np.isnan(out[0, :2]).all() and out[0, 2] > 0


def test_depth_max_filters_16uc1():
    msg = depth_to_compressed_depth(np.array([[1.0, 2.5, 4.0]]), "16UC1", depth_max=3.0)
    np.testing.assert_allclose(compressed_depth_to_metres(msg), [[1.0, 2.5, np.nan]], rtol=1e-6)


@pytest.mark.parametrize("fmt,body,match", [
    ("16UC1; compressedDepth png", b"", "empty data"),
    ("16UC1; compressedDepth png", b"\x00" * 5, "too short"),
    ("16UC1; compressedDepth png", b"\x00" * 12, "too short"),
    ("8UC1; compressedDepth png", b"\x00" * 40, "8UC1"),
    ("32FC3; compressedDepth png", b"\x00" * 40, "supported"),
    ("16UC1; compressedDepth zstd", b"\x00" * 40, "png or rvl"),
    ("16UC1; jpeg compressed", b"\x00" * 40, "png or rvl"),
    ("16UC1; compressedDepth png", b"\x00" * 12 + b"not a png at all, really", "not a PNG"),
    ("16UC1; compressedDepth png", b"\x00" * 12 + b"\x89PNG\r\n\x1a\n\x00\x00", "truncated"),
    ("16UC1; compressedDepth rvl", b"\x00" * 12 + b"\x01\x00", "too short"),
])
def test_malformed_depth_messages(fmt, body, match):
    with pytest.raises(InputError, match=match):
        compressed_depth_to_metres(message(fmt, body))


def test_depth_png_must_be_16_bit_grey():
    for arr in (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.uint8)):
        with pytest.raises(InputError, match="16-bit greyscale"):
            compressed_depth_to_metres(depth_message("16UC1", pillow_file(arr, "PNG")))
    rgb16 = png_file(2, 2, 16, 2, (b"\x00" + b"\x01\x02" * 6) * 2)
    with pytest.raises(InputError, match="colour type 2"):
        compressed_depth_to_metres(depth_message("16UC1", rgb16))
    corrupt = png_file(50, 50, 16, 0, b"short")
    with pytest.raises(InputError, match="could not be decoded"):
        compressed_depth_to_metres(depth_message("16UC1", corrupt))


def test_depth_bombs_are_refused():
    with pytest.raises(InputError, match="exceeds max_pixels"):
        compressed_depth_to_metres(depth_message("16UC1", png_file(40000, 40000, 16, 0, b"\x00" * 10)))
    with pytest.raises(InputError, match="exceeds max_pixels"):
        compressed_depth_to_metres(depth_message("16UC1", struct.pack("<II", 100000, 100000) + b"\x00" * 8,
                                                 codec="rvl"))
    with pytest.raises(InputError, match="zero size"):
        compressed_depth_to_metres(depth_message("16UC1", struct.pack("<II", 0, 10), codec="rvl"))


def test_32fc1_header_checks():
    png = pillow_file(np.ones((2, 2), np.uint16), "PNG")
    for a, b in ((np.nan, 0.0), (1.0, np.inf), (0.0, 1.0)):
        with pytest.raises(InputError, match="quantisation"):
            compressed_depth_to_metres(depth_message("32FC1", png, a=a, b=b))
    with pytest.raises(InputError, match="compression format 3"):
        compressed_depth_to_metres(depth_message("32FC1", png, a=1.0, b=0.0, kind=3))
    # 16UC1 ignores the parameters (older publishers left them uninitialised)
    out = compressed_depth_to_metres(depth_message("16UC1", png, a=np.nan, b=np.nan, kind=-7))
    np.testing.assert_allclose(out, 0.001)


def test_bad_depth_arguments_are_config_errors():
    msg = depth_to_compressed_depth(np.ones((2, 2)), "16UC1")
    for bad in (0.0, -1.0, np.nan, "1"):
        with pytest.raises(ConfigError):
            compressed_depth_to_metres(msg, depth_scale=bad)
    with pytest.raises(ConfigError):
        compressed_depth_to_metres(msg, max_pixels=0)
    with pytest.raises(ConfigError):
        depth_to_compressed_depth(np.ones((2, 2)), "mono8")
    with pytest.raises(ConfigError):
        depth_to_compressed_depth(np.ones((2, 2)), fmt="jpeg")
    with pytest.raises(ConfigError):
        depth_to_compressed_depth(np.ones((2, 2)), depth_max=np.inf)
    with pytest.raises(InputError):
        depth_to_compressed_depth(np.ones((2, 2, 2)))


def test_corrupted_depth_messages_never_raise_anything_but_input_error():
    names = [f"{enc}; compressedDepth {codec}" for enc in ("16UC1", "32FC1") for codec in ("png", "rvl")]
    sources = [bytes(depth_to_compressed_depth(depth_scene(20, 30), name[:5], fmt=name[-3:]).data) for name in names]
    for k, data in corrupted(sources, 400, seed=3, keep=12):
        try:
            out = compressed_depth_to_metres(message(names[k], data), max_pixels=10**6)
        except InputError:
            continue
        assert out.dtype == np.float32 and out.ndim == 2


# ------------------------------------------------------------------------------------------ RVL

def reference_rvl_encode(values: np.ndarray) -> bytes:
    """Sequential transcription of Wilson's RVL coder (runs of zeros / non-zeros, zigzag deltas, 3-bit
    nibbles with a continuation bit, 8 nibbles per little-endian 32-bit word from the top)."""
    words: list[int] = []
    state = {"word": 0, "count": 0}

    def vle(v: int) -> None:
        while True:
            nibble, v = v & 7, v >> 3
            if v:
                nibble |= 8
            state["word"] = ((state["word"] << 4) | nibble) & 0xFFFFFFFF
            state["count"] += 1
            if state["count"] == 8:
                words.append(state["word"])
                state["word"], state["count"] = 0, 0
            if not v:
                return

    flat = [int(v) for v in values.ravel()]
    i, n, previous = 0, len(flat), 0
    while i < n:
        start = i
        while i < n and flat[i] == 0:
            i += 1
        vle(i - start)
        j = i
        while j < n and flat[j] != 0:
            j += 1
        vle(j - i)
        for k in range(i, j):
            delta = flat[k] - previous
            vle(2 * delta if delta >= 0 else -2 * delta - 1)
            previous = flat[k]
        i = j
    if state["count"]:
        words.append((state["word"] << 4 * (8 - state["count"])) & 0xFFFFFFFF)
    return struct.pack(f"<{len(words)}I", *words)


def test_rvl_hand_computed_stream():
    # [0, 0, 5]: zeros 2 -> nibble 2, non-zeros 1 -> 1, delta 5 -> zigzag 10 = 0b1_010 -> nibbles A (010 + more), 1
    stream = rvl_encode(np.array([0, 0, 5], np.uint16))
    assert stream == struct.pack("<I", 0x21A10000)
    np.testing.assert_array_equal(rvl_decode(stream, 3), [0, 0, 5])
    # a trailing run of zeros is coded as (zeros, 0)
    assert rvl_encode(np.array([3, 0, 0, 0], np.uint16)) == struct.pack("<I", 0x01630000)
    np.testing.assert_array_equal(rvl_decode(struct.pack("<I", 0x01630000), 4), [3, 0, 0, 0])


@pytest.mark.parametrize("case", ["random", "all_zero", "no_zero", "extremes", "alternating"])
def test_rvl_matches_the_reference_coder(case):
    rng = np.random.default_rng(4)
    v = {
        "random": np.where(rng.uniform(size=3000) < 0.3, 0, rng.integers(1, 65536, 3000)),
        "all_zero": np.zeros(1000),
        "no_zero": rng.integers(1, 2000, 1000),
        "extremes": np.tile([65535, 1, 0, 65535, 32768, 32767], 50),
        "alternating": np.tile([0, 7], 500),
    }[case].astype(np.uint16)
    stream = rvl_encode(v)
    assert stream == reference_rvl_encode(v)
    np.testing.assert_array_equal(rvl_decode(stream, v.size), v)


def test_rvl_malformed_streams():
    good = rvl_encode(np.array([0, 0, 5, 9, 0, 4], np.uint16))
    with pytest.raises(InputError, match="ends after 0 of 4"):
        rvl_decode(b"", 4)
    with pytest.raises(InputError, match="RVL"):  # runs out, or reads the zero padding as a (0, 0) run
        rvl_decode(good, 600)
    with pytest.raises(InputError, match="whole number"):
        rvl_decode(good[:-1], 6)
    with pytest.raises(InputError, match="malformed RVL run"):
        rvl_decode(struct.pack("<I", 0x00000000), 4)  # a run of 0 zeros and 0 values
    with pytest.raises(InputError, match="malformed RVL run"):
        rvl_decode(rvl_encode(np.zeros(10, np.uint16)), 5)  # a run longer than the image
    with pytest.raises(InputError, match="nibbles"):
        rvl_decode(struct.pack("<II", 0xFFFFFFFF, 0xFFFF0000), 4)
    with pytest.raises(InputError):
        rvl_encode(np.zeros(4, np.int32))


def test_rvl_depth_layout_matches_the_transport():
    units = np.array([[0, 5, 5], [7, 0, 0]], np.uint16)
    msg = depth_to_compressed_depth(units * 0.001, "16UC1", fmt="rvl")
    data = bytes(msg.data)
    assert struct.unpack_from("<II", data, 12) == (3, 2)  # cols, rows after the 12-byte header
    assert data[20:] == reference_rvl_encode(units)
