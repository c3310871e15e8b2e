"""``sensor_msgs/PointCloud2`` <-> ``[N, 3]`` points (metres, in the header's frame) with a per-point score.

Only message packages are imported, never ``rclpy`` nodes.
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from semcorr_ros.errors import InputError
from semcorr_ros.ros.convert import _MACHINE_BIG_ENDIAN, _byte_order, _header_or_default, _to_byte_array, _u8

__all__ = ["points_to_cloud", "cloud_to_points"]

# PointField datatype constant -> numpy element type.
_POINTFIELD_DTYPES: dict[int, np.dtype] = {
    PointField.INT8: np.dtype(np.int8),
    PointField.UINT8: np.dtype(np.uint8),
    PointField.INT16: np.dtype(np.int16),
    PointField.UINT16: np.dtype(np.uint16),
    PointField.INT32: np.dtype(np.int32),
    PointField.UINT32: np.dtype(np.uint32),
    PointField.FLOAT32: np.dtype(np.float32),
    PointField.FLOAT64: np.dtype(np.float64),
}

_CLOUD_FIELDS = ("x", "y", "z", "score")


def points_to_cloud(
    points: np.ndarray, scores: np.ndarray | None = None, header: Header | None = None
) -> PointCloud2:
    """Build an unorganised ``sensor_msgs/PointCloud2`` with FLOAT32 fields ``x, y, z, score``.

    Args:
        points: ``[N, 3]`` metres in ``header.frame_id`` (``N`` may be 0).
        scores: ``[N]`` per-point score (e.g. match confidence); None writes NaN ("unknown").
        header: the message header (used as is); an empty one when None.

    Returns:
        ``height = 1``, ``width = N``, ``point_step = 16``, ``row_step = 16 N``, this machine's byte order,
        ``is_dense`` true when all coordinates are finite (the case for valid 3D points).

    Raises:
        InputError: wrong shapes.
    """
    P = np.asarray(points)
    if P.size == 0:
        P = P.reshape(0, 3)
    if P.ndim != 2 or P.shape[1] != 3 or P.dtype.kind not in "fiu":
        raise InputError(f"points must be a real-valued [N, 3] array, got shape {list(P.shape)} dtype {P.dtype}")
    n = int(P.shape[0])
    buf = np.empty((n, 4), dtype=np.float32)
    buf[:, :3] = P
    if scores is None:
        buf[:, 3] = np.nan
    else:
        S = np.asarray(scores)
        if S.shape != (n,):
            raise InputError(f"scores must have shape [{n}] to match points, got {list(S.shape)}")
        buf[:, 3] = S
    fields = [
        PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, name in enumerate(_CLOUD_FIELDS)
    ]
    msg = PointCloud2(
        header=_header_or_default(header),
        height=1,
        width=n,
        fields=fields,
        is_bigendian=_MACHINE_BIG_ENDIAN,
        point_step=16,
        row_step=16 * n,
        is_dense=bool(np.isfinite(buf[:, :3]).all()),
    )
    msg.data = _to_byte_array(buf)
    return msg


def _cloud_field(msg: PointCloud2, field: PointField, buf: np.ndarray) -> np.ndarray:
    base = _POINTFIELD_DTYPES[field.datatype]
    dtype = base.newbyteorder(_byte_order(msg.is_bigendian))
    arr = np.ndarray(
        (int(msg.height), int(msg.width)),
        dtype=dtype,
        buffer=buf,
        offset=int(field.offset),
        strides=(int(msg.row_step), int(msg.point_step)),
    )
    return arr.reshape(-1)


def cloud_to_points(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``x, y, z`` (and ``score`` when present) from any ``sensor_msgs/PointCloud2``.

    Honours ``point_step``, ``row_step``, field offsets/datatypes and ``is_bigendian``; organised clouds are
    flattened row-major.

    Returns:
        ``(points [N, 3], scores [N] or None)``; ``float64`` when any of the fields read is FLOAT64, else
        ``float32``; native byte order; new arrays.

    Raises:
        InputError: a missing ``x``/``y``/``z`` field (lists the fields present), an unknown datatype, a field
            that does not fit in ``point_step``, ``row_step < width * point_step`` or
            ``len(data) != row_step * height``.
    """
    by_name = {f.name: f for f in msg.fields}
    missing = [n for n in ("x", "y", "z") if n not in by_name]
    if missing:
        raise InputError(f"PointCloud2 lacks field(s) {missing}; fields present: {list(by_name)}")
    wanted = [by_name[n] for n in _CLOUD_FIELDS if n in by_name]
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    for f in wanted:
        if f.datatype not in _POINTFIELD_DTYPES:
            raise InputError(
                f"PointCloud2 field {f.name!r} has unknown datatype {f.datatype}; valid: {sorted(_POINTFIELD_DTYPES)}"
            )
        end = int(f.offset) + _POINTFIELD_DTYPES[f.datatype].itemsize
        if end > point_step:
            raise InputError(
                f"PointCloud2 field {f.name!r} (offset {f.offset}) ends at byte {end} > point_step {point_step}"
            )
    if row_step < width * point_step:
        raise InputError(f"PointCloud2 row_step {row_step} < width*point_step = {width}*{point_step}")
    buf = _u8(msg.data)
    if buf.size != row_step * height:
        raise InputError(
            f"PointCloud2 data size mismatch: expected row_step*height = {row_step}*{height} = "
            f"{row_step * height} bytes, got {buf.size}"
        )
    out_dtype = np.float64 if any(f.datatype == PointField.FLOAT64 for f in wanted) else np.float32
    n = height * width
    points = np.empty((n, 3), dtype=out_dtype)
    if n:
        for c, name in enumerate(("x", "y", "z")):
            points[:, c] = _cloud_field(msg, by_name[name], buf)
    scores: np.ndarray | None = None
    if "score" in by_name:
        scores = np.empty(n, dtype=out_dtype)
        if n:
            scores[:] = _cloud_field(msg, by_name["score"], buf)
    return points, scores
