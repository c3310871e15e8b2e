#!/usr/bin/env python3
"""Measure correspond_node end to end: a 640x480 RGB-D stream at 30 Hz into a separate node process.

Starts the installed ``correspond_node`` (``<venv>/lib/semcorr_ros/correspond_node``) with
``config/correspond.yaml`` and the example reference, waits until its diagnostics say ``ready``, publishes the
example robot shifted along a circle (so every frame has a known answer) for ``--duration`` seconds, then stops
the node with SIGINT (or ``--signal TERM``) and reports:

- published rate of ``/semcorr/matches`` (Hz) and the input stream's achieved rate;
- latency p50/p95/max: ``CorrespondenceArray.latency`` (node clock at publish - colour stamp) and the same
  measured on receipt here; engine processing time p50;
- drift: latency p50 of the first and the last third of the run (a backlog would make it grow);
- frames received / dropped / rejected by the node (its /diagnostics);
- pixel error (median, max) and 3D error (median) of the matches against the known answer;
- node RSS (MiB) after warm-up, max and at the end; the node's exit code and whether it printed a traceback;
- CPU use (% of one core) of the node, of this publisher and of every other process on the machine during
  the stream (other jobs on a small machine slow the model down: read the figures with that one);
- the reference for those figures, measured in this process right after the node stopped, on the same
  frames and with the same engine parameters (``--engine-frames``, 0 skips it): engine p50 (``engine.match``
  alone), conversion p50 (``frame_from_messages``) and message-building p50; and the ratios
  ``rate_x_engine_p50`` (published rate x engine p50: 1.0 = the node keeps up with its engine) and
  ``latency_over_engine_ms`` (latency p50 - engine p50).

Usage (from the repository root, after ``bash tools/setup.sh``)::

    .venv/bin/python lab/dev/measure_node_rate.py [--duration 20] [--json out/node_rate.json]
        [--node-arg=-p --node-arg=torch_threads:=1]

With ``PYTHONPATH=<another checkout>`` (run from outside the repository root) the node and the engine
reference both import that checkout's ``semcorr_ros``.

Sets a localhost Fast DDS profile and a random ROS_DOMAIN_ID when they are not set (like the test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _environment() -> None:
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "tools" / "fastdds_localhost.xml"))
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    log_dir = REPO / "build" / "test_ros_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ROS_LOG_DIR", str(log_dir))
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    for name in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY"):
        os.environ.pop(name, None)
    from semcorr_ros.threads import configure_openmp

    configure_openmp()  # the node's OpenMP setting, for the engine reference (before torch is imported)


def _node_values(params_file: Path, node_args: list[str]) -> dict:
    """The node's parameter values: the params file's ``/**`` (or only) entry, then ``-p name:=value`` args."""
    import yaml

    doc = yaml.safe_load(params_file.read_text()) or {}
    entry = doc.get("/**") or next(iter(doc.values()), {})
    values = dict(entry.get("ros__parameters", {}))
    for i, arg in enumerate(node_args):
        if arg == "-p" and i + 1 < len(node_args) and ":=" in node_args[i + 1]:
            name, value = node_args[i + 1].split(":=", 1)
            values[name] = yaml.safe_load(value)
    return values


def _engine_reference(values: dict, spec: object, frames: list, n: int) -> dict:
    """Engine p50 (``match`` alone), conversion p50 and message-building p50 on the stream's frames, ms."""
    from semcorr_ros.engine import CorrespondenceEngine
    from semcorr_ros.ros import messages
    from semcorr_ros.ros.frames import frame_from_messages
    from semcorr_ros.ros.params import engine_config

    cfg = engine_config(values)
    if int(values.get("torch_threads", 0) or 0) > 0:
        import torch

        torch.set_num_threads(int(values["torch_threads"]))
    engine = CorrespondenceEngine(cfg)
    engine.set_reference(spec.image, spec.keypoints, spec.names, depth=spec.depth, intrinsics=spec.intrinsics)
    times: dict[str, list[float]] = {"convert": [], "engine": [], "messages": []}
    for i in range(n + 3):  # 3 warm-up frames
        color, depth, info = frames[i % len(frames)]
        t0 = time.perf_counter()
        frame = frame_from_messages(color, depth, info, cfg.depth_scale)
        t1 = time.perf_counter()
        result = engine.match(frame.rgb, frame.depth, frame.K)
        t2 = time.perf_counter()
        messages.correspondence_array(result, frame.header, spec.reference_id, t2 - t1, t2 - t0)
        messages.cloud_of_valid_points(result, frame.header)
        messages.pose_stamped(result, frame.header)
        messages.markers(result, frame.header, 0.02, ns="semcorr")
        t3 = time.perf_counter()
        if i >= 3:
            for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
                times[key].append(dt)
    return {"engine_frames": n, "engine_device": str(getattr(engine, "device", "?")),
            **{f"{k}_p50_ms": round(_pct(v, 50) * 1e3, 1) for k, v in times.items()}}


def _shift(a: np.ndarray, dx: int, dy: int, fill: object) -> np.ndarray:
    out = np.empty_like(a)
    out[...] = fill
    h, w = a.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        a[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds used so far: by process ``pid`` (user + system), or by the whole machine (non-idle) when None."""
    tick = os.sysconf("SC_CLK_TCK")
    if pid is None:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
        return (sum(values) - values[3] - values[4]) / tick  # minus idle and iowait
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / tick


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="stream length, s (default %(default)s)")
    parser.add_argument("--rate", type=float, default=30.0, help="input rate, Hz (default %(default)s)")
    parser.add_argument("--ready-timeout", type=float, default=240.0, help="model load limit, s")
    parser.add_argument("--params-file", type=Path, default=REPO / "config" / "correspond.yaml")
    parser.add_argument("--launcher", type=Path, default=Path(sys.prefix) / "lib" / "semcorr_ros" / "correspond_node")
    parser.add_argument("--node-arg", action="append", default=[], help="extra --ros-args for the node")
    parser.add_argument("--signal", choices=("INT", "TERM"), default="INT", help="how to stop the node")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--engine-frames", type=int, default=20,
                        help="frames for the engine reference after the node stopped (0: skip; default %(default)s)")
    args = parser.parse_args(argv)
    _environment()

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from semcorr_ros.msg import CorrespondenceArray
    from semcorr_ros.reference import load_reference
    from semcorr_ros.ros.camera import K_to_camera_info
    from semcorr_ros.ros.convert import depth_to_image, rgb_to_image, sec_to_stamp

    spec = load_reference(REPO / "config" / "example_reference.yaml")
    K = spec.intrinsics
    offsets = [(int(round(20 * np.cos(a))), int(round(14 * np.sin(a))))
               for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)]
    frames = []
    for dx, dy in offsets:
        header = Header(frame_id="camera_color_optical_frame")
        rgb = _shift(spec.image, dx, dy, spec.image[0, 0])
        depth = _shift(spec.depth, dx, dy, np.float32(1.5))
        frames.append((rgb_to_image(rgb, "rgb8", header), depth_to_image(depth, "16UC1", header),
                       K_to_camera_info(K, rgb.shape[1], rgb.shape[0], header)))
    expected_xy = [spec.keypoints + np.array([dx, dy], float) for dx, dy in offsets]

    logs = Path(tempfile.mkdtemp(prefix="semcorr_measure_"))
    cmd = [str(args.launcher), "--ros-args", "--params-file", str(args.params_file),
           "-p", f"reference_file:={REPO / 'config' / 'example_reference.yaml'}", "-p", "diagnostics_period:=0.5",
           *args.node_arg]
    out_f, err_f = open(logs / "stdout.txt", "w"), open(logs / "stderr.txt", "w")
    proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, env=dict(os.environ))

    rclpy.init()
    node = rclpy.create_node("rgbd_stream")
    pubs = [node.create_publisher(Image, "/color/image_raw", qos_profile_sensor_data),
            node.create_publisher(Image, "/aligned_depth_to_color/image_raw", qos_profile_sensor_data),
            node.create_publisher(CameraInfo, "/color/camera_info", qos_profile_sensor_data)]
    lock = threading.Lock()
    sent: dict[tuple[int, int], int] = {}
    received: list[dict] = []
    diag: dict[str, str] = {}

    def on_matches(msg: CorrespondenceArray) -> None:
        now = node.get_clock().now().nanoseconds * 1e-9
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        with lock:
            idx = sent.get(key)
        row = {"t": now, "latency": msg.latency, "recv_latency": now - (key[0] + key[1] * 1e-9),
               "processing": msg.processing_time}
        if idx is not None and msg.correspondences:
            xy = np.array([[c.x, c.y] for c in msg.correspondences])
            err = np.linalg.norm(xy - expected_xy[idx], axis=1)
            row["px_err"] = err.tolist()
            fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
            ex = expected_xy[idx]
            exp3 = np.stack([(ex[:, 0] - cx) / fx * 0.8, (ex[:, 1] - cy) / fy * 0.8, np.full(len(ex), 0.8)], 1)
            got3 = np.array([[c.point.x, c.point.y, c.point.z] for c in msg.correspondences])
            has = np.array([c.has_point for c in msg.correspondences])
            row["err3d"] = np.linalg.norm(got3[has] - exp3[has], axis=1).tolist()
        with lock:
            received.append(row)

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name.startswith("semcorr:"):
                with lock:
                    diag.clear()
                    diag.update({kv.key: kv.value for kv in st.values})

    node.create_subscription(CorrespondenceArray, "/semcorr/matches", on_matches, 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()

    report: dict = {"command": cmd, "duration_s": args.duration, "input_rate_hz": args.rate}
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.ready_timeout:
            with lock:
                state = diag.get("state")
            if state == "ready" and all(p.get_subscription_count() > 0 for p in pubs):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"node exited early with {proc.returncode}; logs in {logs}")
            time.sleep(0.2)
        else:
            raise RuntimeError(f"node not ready after {args.ready_timeout} s; logs in {logs}")
        report["ready_after_s"] = round(time.monotonic() - t0, 2)
        with lock:
            base = {k: diag.get(k, "0") for k in ("frames_received", "frames_dropped", "frames_rejected")}
        rss: list[float] = [_rss_mib(proc.pid)]

        period = 1.0 / args.rate
        cpu0 = (_cpu_seconds(), _cpu_seconds(proc.pid), time.process_time())
        start = time.monotonic()
        n = 0
        next_rss = start
        while time.monotonic() - start < args.duration:
            color, depth, info = frames[n % len(frames)]
            stamp = sec_to_stamp(node.get_clock().now().nanoseconds * 1e-9)
            for m in (color, depth, info):
                m.header.stamp = stamp
            with lock:
                sent[(stamp.sec, stamp.nanosec)] = n % len(frames)
            pubs[2].publish(info)
            pubs[1].publish(depth)
            pubs[0].publish(color)
            n += 1
            now = time.monotonic()
            if now >= next_rss:
                rss.append(_rss_mib(proc.pid))
                next_rss = now + 0.5
            time.sleep(max(0.0, start + n * period - time.monotonic()))
        stream_s = time.monotonic() - start
        machine, node_cpu, own = (b - a for a, b in zip(cpu0, (_cpu_seconds(), _cpu_seconds(proc.pid),
                                                                time.process_time())))
        time.sleep(1.5)  # the last frame in flight, and one more diagnostics message
        rss.append(_rss_mib(proc.pid))
        with lock:
            rows = [r for r in received]
            d = dict(diag)
        lat = [r["latency"] for r in rows]
        third = max(1, len(lat) // 3)
        px = [e for r in rows for e in r.get("px_err", [])]
        e3 = [e for r in rows for e in r.get("err3d", [])]
        report.update({
            "frames_sent": n, "stream_rate_hz": round(n / stream_s, 2), "matches_received": len(rows),
            "published_rate_hz": round(len(rows) / stream_s, 2),
            "latency_p50_ms": round(_pct(lat, 50) * 1e3, 1), "latency_p95_ms": round(_pct(lat, 95) * 1e3, 1),
            "latency_max_ms": round(max(lat, default=float("nan")) * 1e3, 1),
            "recv_latency_p50_ms": round(_pct([r["recv_latency"] for r in rows], 50) * 1e3, 1),
            "processing_p50_ms": round(_pct([r["processing"] for r in rows], 50) * 1e3, 1),
            "latency_p50_first_third_ms": round(_pct(lat[:third], 50) * 1e3, 1),
            "latency_p50_last_third_ms": round(_pct(lat[-third:], 50) * 1e3, 1),
            "node_frames_received": int(d.get("frames_received", 0)) - int(base["frames_received"]),
            "node_frames_dropped": int(d.get("frames_dropped", 0)) - int(base["frames_dropped"]),
            "node_frames_rejected": int(d.get("frames_rejected", 0)) - int(base["frames_rejected"]),
            "node_diagnostics": d,
            "pixel_error_median": round(float(np.median(px)), 2) if px else None,
            "pixel_error_max": round(float(np.max(px)), 2) if px else None,
            "error_3d_median_m": round(float(np.median(e3)), 4) if e3 else None,
            "rss_mib_after_warmup": round(rss[0], 1), "rss_mib_max": round(float(np.nanmax(rss)), 1),
            "rss_mib_end": round(rss[-1], 1),
            "cpu_cores": os.cpu_count(),
            "cpu_node_pct": round(100 * node_cpu / stream_s, 1),
            "cpu_stream_publisher_pct": round(100 * own / stream_s, 1),
            "cpu_other_processes_pct": round(100 * max(0.0, machine - node_cpu - own) / stream_s, 1),
        })
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if args.signal == "INT" else signal.SIGTERM)
            t_stop = time.monotonic()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            report["shutdown_s"] = round(time.monotonic() - t_stop, 2)
        out_f.close()
        err_f.close()
        output = (logs / "stdout.txt").read_text() + (logs / "stderr.txt").read_text()
        report.update({"exit_code": proc.returncode, "traceback": "Traceback" in output,
                       "stop_signal": f"SIG{args.signal}", "node_log": str(logs)})
        executor.shutdown(timeout_sec=2.0)
        spin.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    if args.engine_frames > 0 and "latency_p50_ms" in report:
        ref = _engine_reference(_node_values(args.params_file, args.node_arg), spec, frames, args.engine_frames)
        engine_s = ref["engine_p50_ms"] * 1e-3
        report.update(ref)
        report["rate_x_engine_p50"] = round(report["published_rate_hz"] * engine_s, 3)
        report["latency_over_engine_ms"] = round(report["latency_p50_ms"] - ref["engine_p50_ms"], 1)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if "rate_x_engine_p50" in report:
        r = report
        print(f"node {r['published_rate_hz']} Hz, latency p50 {r['latency_p50_ms']} ms, processing p50 "
              f"{r['processing_p50_ms']} ms | engine p50 {r['engine_p50_ms']} ms (1/p50 = "
              f"{1e3 / r['engine_p50_ms']:.1f} Hz) | rate x engine p50 = {r['rate_x_engine_p50']}, latency - engine "
              f"p50 = {r['latency_over_engine_ms']} ms", file=sys.stderr)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
