"""Options of the correspondence node that are not engine options (ROS-free: the docs and the CLI read them)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from semcorr_ros.options import ADVANCED, option
from semcorr_ros.reference import MAX_KEYPOINTS, MAX_PIXELS
from semcorr_ros.ros.stamps import STAMP_SOURCES

__all__ = ["NodeOptions", "COLOR_TRANSPORTS", "DEPTH_TRANSPORTS"]

#: Colour input transports: ``raw`` (sensor_msgs/Image) or ``compressed`` (CompressedImage, JPEG/PNG).
COLOR_TRANSPORTS = ("raw", "compressed")
#: Depth input transports: ``raw`` (Image) or ``compressedDepth`` (CompressedImage, PNG or RVL).
DEPTH_TRANSPORTS = ("raw", "compressedDepth")

_inputs = functools.partial(option, group="inputs")
_sync = functools.partial(option, group="synchronisation")
_ref = functools.partial(option, group="reference")
_out = functools.partial(option, group="outputs")


@dataclass(frozen=True)
class NodeOptions:
    """Options of the correspondence node that are not engine options (defaults; the node reads parameters)."""

    torch_threads: int = option(0, "PyTorch CPU threads (0 = PyTorch's default).", group="model", range=(0, 256),
                                runtime=False, flag="--threads", metavar="N")
    color_transport: str = _inputs(
        "raw", "Colour input: raw (`sensor_msgs/Image` on `color/image_raw`) or compressed (`CompressedImage`, "
        "JPEG/PNG, on `color/image_raw/compressed`).", choices=COLOR_TRANSPORTS, runtime=False)
    depth_transport: str = _inputs(
        "raw", "Depth input: raw (`Image` on `aligned_depth_to_color/image_raw`) or compressedDepth "
        "(`CompressedImage` on `aligned_depth_to_color/image_raw/compressedDepth`).", choices=DEPTH_TRANSPORTS,
        runtime=False)
    rectified_input: bool = _inputs(
        False, "The images are rectified (image_proc's `image_rect`): intrinsics from `CameraInfo.p`, no "
        "distortion. false: raw images, `K` and the distortion model `D` (plumb_bob, rational_polynomial, "
        "equidistant) are used to lift keypoints to 3D.")
    require_matching_frame_ids: bool = _inputs(
        True, "Reject sets whose colour, depth and camera-info `frame_id` differ (depth not aligned to colour is "
        "lifted to 3D wrongly); empty frame ids are not compared.")
    max_image_pixels: int = _inputs(
        MAX_PIXELS, "Largest width x height accepted for a live image or a reference image; larger ones are "
        "rejected before they are decoded.", range=(1, 1 << 28), runtime=False, tier=ADVANCED)
    sync_slop: float = _sync(
        0.02, "Largest |t_depth - t_colour| for a colour and a depth frame to pair, seconds (of header stamps, or "
        "of arrival times when those are used).", range=(0.0, 1.0))
    sync_buffer_size: int = _sync(
        5, "Frames buffered per input stream while waiting for a partner; older ones are dropped and counted.",
        range=(1, 100), tier=ADVANCED)
    stamp_source: str = _sync(
        "auto", "Time base that pairs colour and depth: header (the messages' stamps), arrival (when they arrive) "
        "or auto (header stamps, switching to arrival times when a camera publishes zero or constant stamps; "
        "/diagnostics says so).", choices=STAMP_SOURCES)
    sync_time_jump_reset: float = _sync(
        1.0, "A frame this many seconds older than the newest one of its stream (a bag looping, simulated time "
        "restarting) clears the buffers instead of being dropped.", range=(0.001, 1e6), tier=ADVANCED)
    reference_file: str = _ref(
        "", "Reference YAML: named keypoints in pixels, optionally image, depth and intrinsics (format: "
        "`semcorr_ros.reference`). Absolute, relative to the working directory, or "
        "`package://semcorr_ros/<path>`. `\"\"` = no reference (frames are rejected until one is set; "
        "config/correspond.yaml names the example). Changing it reloads the reference; a bad one is rejected and "
        "the old one stays active.")
    reference_image: str = _ref("", "Reference image overriding the YAML's `image` (`\"\"` = the YAML's).")
    reference_depth: str = _ref(
        "", "Reference depth overriding the YAML's `depth`: 16-bit PNG in millimetres or `.npy` in metres "
        "(`\"\"` = the YAML's).")
    reference_intrinsics: tuple[float, ...] | None = _ref(
        None, "Reference camera intrinsics `[fx, fy, cx, cy]` overriding the YAML's (not set = the YAML's).")
    max_reference_keypoints: int = _ref(
        MAX_KEYPOINTS, "Most keypoints a reference may have (the matching cost grows with them); a reference with "
        "more is rejected.", range=(1, 4096), runtime=False, tier=ADVANCED)
    enabled: bool = option(
        True, "Run inference (false pauses it: frames are dropped and counted, nothing is published; also the "
        "`~/set_enabled` std_srvs/SetBool service).")
    fatal_after_failures: int = option(
        50, "Exit with code 1 (so that launch's respawn restarts the node) after this many consecutive frames "
        "failed with an unexpected error (e.g. CUDA out of memory); 0 = never.", range=(0, 1_000_000),
        runtime=False, tier=ADVANCED)
    publish_debug_image: bool = _out(True, "Publish `~/debug_image` (drawn only while someone subscribes).")
    marker_scale: float = _out(0.02, "Diameter of the keypoint spheres in `~/markers`, metres.", range=(0.001, 1.0))
    diagnostics_period: float = _out(1.0, "Seconds between `/diagnostics` messages.", range=(0.1, 60.0),
                                     runtime=False, tier=ADVANCED)
