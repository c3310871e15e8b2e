"""lab/ablation.py, the steps: :class:`Runner` runs each step's command as a subprocess, logs the exact command
(``<out>/logs/<step>.log`` starts with ``$ <command>``) and skips a step whose output exists (unless forced);
:func:`eval_and_bench` is one table row (`semcorr eval` + `semcorr bench --frames 20` with the same engine flags).

Units: step times in seconds, latencies in milliseconds (p50 of `semcorr bench`), PCK as a fraction (0..1).
Paths in the displayed commands are relative to the repository root (:func:`display`).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: frames of every `semcorr bench` step (``--frames``)
BENCH_FRAMES = 20


class StepFailed(RuntimeError):
    """A subprocess exited non-zero (or ran past its time limit)."""


def _semcorr() -> str:
    exe = Path(sys.executable).with_name("semcorr")
    if not exe.is_file():
        sys.exit(f"ablation: {exe} not found: run with the venv's python after `bash tools/setup.sh`")
    return str(exe)


def display(cmd: list[str]) -> str:
    """The command as a reader would type it: `semcorr ...`, paths relative to the repository root."""
    text = shlex.join(cmd).replace(_semcorr(), "semcorr")
    return text.replace(str(REPO) + "/", "").replace(str(REPO.parent) + "/", "../")


class Runner:
    """Runs steps sequentially, logging each exact command; skips a step whose output exists (unless force)."""

    def __init__(self, out: Path, force: bool, previous_steps: list[dict] | None = None) -> None:
        self.out = out
        self.force = force
        self.steps: list[dict] = []
        self.previous = {s["step"]: s for s in previous_steps or []}

    def run(self, name: str, cmd: list[str], done: Path, timeout: float | None = None) -> dict:
        log = self.out / "logs" / f"{name}.log"
        rec = {"step": name, "command": shlex.join(cmd), "display": display(cmd), "log": str(log),
               "output": str(done)}
        if done.exists() and not self.force:
            prev = self.previous.get(name, {})
            rec.update(skipped=True, seconds=None,
                       seconds_earlier_run=prev.get("seconds") or prev.get("seconds_earlier_run"),
                       load_at_start=prev.get("load_at_start"))
            print(f"[skip] {name}: {done.name} exists", flush=True)
            self.steps.append(rec)
            return rec
        log.parent.mkdir(parents=True, exist_ok=True)
        done.parent.mkdir(parents=True, exist_ok=True)
        print(f"[run ] {name}: {rec['display']}", flush=True)
        rec["load_at_start"] = round(os.getloadavg()[0], 1)
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        t0 = time.perf_counter()
        with open(log, "w") as fh:
            fh.write("$ " + shlex.join(cmd) + "\n")
            fh.flush()
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=done.parent, env=env)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                proc.kill()
                proc.wait()
                rec.update(skipped=False, seconds=round(time.perf_counter() - t0, 1), timed_out=True)
                self.steps.append(rec)
                raise StepFailed(f"{name} ran past {timeout:.0f} s (log {log})") from exc
        rec.update(skipped=False, seconds=round(time.perf_counter() - t0, 1), rc=rc)
        self.steps.append(rec)
        if rc != 0 or not done.exists():
            raise StepFailed(f"{name} failed (exit {rc}), see {log}:\n  {rec['command']}")
        return rec


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def eval_and_bench(runner: Runner, sub: str, name: str, eval_args: list[str], engine: list[str]) -> dict:
    """`semcorr eval` + `semcorr bench --frames 20` with the same engine flags; one table row."""
    d = runner.out / sub
    ev_json, be_json = d / f"{name}_eval.json", d / f"{name}_bench.json"
    ev = runner.run(f"{sub}_{name}_eval", [_semcorr(), "eval", *eval_args, *engine, "--no-progress",
                                            "--json", str(ev_json)], ev_json)
    be = runner.run(f"{sub}_{name}_bench", [_semcorr(), "bench", "--frames", str(BENCH_FRAMES), *engine,
                                             "--no-progress", "--json", str(be_json)], be_json)
    e, b = _load(ev_json), _load(be_json)
    return {"pairs": e["pairs"], "keypoints": e["keypoints"], "kbc_pairs": e.get("kbc_pairs"),
            "pck_005": e["pck"]["0.05"], "pck_01": e["pck"]["0.1"], "pck_015": e["pck"]["0.15"],
            "per_category_pck_01": {c: (v.get("pck") or {}).get("0.1")
                                    for c, v in (e.get("per_category") or {}).items()},
            "latency_p50_ms": b["latency_ms"]["p50"], "match_p50_ms": b["stages_ms_p50"].get("match"),
            "eval_command": ev["display"], "bench_command": be["display"]}
