#!/usr/bin/env python3
"""Ablation tables: fusion sources, matcher, depth-aware weighting and KBC, on held-apart data.

Usage (after `bash tools/setup.sh`; run from the repository root or anywhere):

    .venv/bin/python lab/ablation.py [--out out/ablation] [--doc docs/ablation.md] [--blocks fusion matcher synth]
                                       [--force] [--kbcnet-weights PATH] [--wait-synth-until HH:MM]

Runs the real CLI (`semcorr train-fusion`, `train-kbcnet`, `eval`, `bench`) as subprocesses, logs every exact
command (``<out>/logs/<step>.log`` starts with ``$ <command>``), and writes ``<out>/ablation.json`` and the
markdown page ``--doc`` (one table per block; each row: configuration, data, PCK@0.05, PCK@0.1, latency p50 of
`semcorr bench --frames 20` with the same engine flags, and the command).

Blocks:

1. ``fusion`` -- pf-willow-dev (all 450 pairs): each source alone, uniform fusion (equal weight per map; equal
   weight per source), the hand-set weights (effnet 0.7 / dinov2 0.3, chosen on this split), the shipped default
   (learned on rendered scenes) and a fusion learned here by `semcorr train-fusion --dataset synth` (synthetic
   scenes only: neither sees a PF-WILLOW image).
2. ``matcher`` -- nn vs the KBCNet head on fold A of docs/kbcnet.md (trained on car(G), motorbike(G),
   winebottle(M); evaluated on car(M), motorbike(S)), and on the same fold uniform fusion vs the projected fusion
   (`semcorr train-fusion --fusion-model projected`, trained on the same training sub-classes). The head is
   trained for ``--kbcnet-epochs`` (default 1); when that exceeds ``--kbcnet-timeout`` the run falls back to
   ``--kbcnet-fallback`` (if present) and says so.
3. ``synth`` -- depth-aware off/on and KBC off/auto/on on the synthetic RGB-D scenes, read from
   ``lab/synth_benchmark.py``'s ``summary.json`` (never re-run here; ``--wait-synth-until`` polls for it).

Re-runs are cheap: a step whose output (JSON / weights) exists is skipped unless ``--force``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the development copy of PF-WILLOW next to the work tree, unless SEMCORR_PFWILLOW_ROOT (as in tools/run.sh) or --data
DEFAULT_DATA = Path(os.environ.get("SEMCORR_PFWILLOW_ROOT") or REPO.parent / "shared" / "data" / "pf-willow-dev")
FOLD_A_TRAIN = "car(G),motorbike(G),winebottle(M)"
FOLD_A_EVAL = "car(M),motorbike(S)"
BENCH_FRAMES = 20

# Synthetic-benchmark variants of block 3, in table order (the flags come from the summary; extra variants of the
# summary follow these rows).
SYNTH_VARIANTS = {
    "default": ("depth-aware on (default)", []),
    "no-depth-aware": ("depth-aware off", ["--no-depth-aware"]),
    "kbc-off": ("KBC off", ["--kbc", "off"]),
    "kbc-auto": ("KBC auto (default)", ["--kbc", "auto"]),
    "kbc-on": ("KBC on", ["--kbc", "on"]),
}


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


# ----------------------------------------------------------------------------------------------- block 1


def write_uniform_source(learned: Path, dest: Path) -> list[float]:
    """Fusion file with equal weight per source, split equally among its layers (map keys from ``learned``)."""
    import torch
    from safetensors import safe_open

    from semcorr_ros.engine.fusion import FeatureFusion, save_fusion

    with safe_open(str(learned), framework="pt") as f:
        keys = json.loads((f.metadata() or {})["keys"])
    sources = [k.split("/")[0] for k in keys]
    n_src = len(set(sources))
    weights = [1.0 / n_src / sources.count(s) for s in sources]
    fusion = FeatureFusion(keys, weights=weights)
    save_fusion(fusion, dest)
    return [round(float(w), 4) for w in torch.softmax(fusion.logits, 0)]


def _learned_weights(path: Path) -> dict[str, float]:
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = json.loads((f.metadata() or {})["keys"])
        w = torch.softmax(f.get_tensor("logits").float(), 0)
    return {k: round(float(v), 3) for k, v in zip(keys, w)}


def block_fusion(runner: Runner, data: Path, synth_scenes: int, synth_frames: int) -> dict:
    d = runner.out / "fusion"
    learned = d / "fusion_synth_s0.safetensors"
    train = runner.run("fusion_train_synth", [
        _semcorr(), "train-fusion", "--dataset", "synth", "--synth-scenes", str(synth_scenes), "--synth-frames",
        str(synth_frames), "--seed", "0", "--out", str(learned), "--json", str(d / "fusion_synth_s0.json"),
        "--no-progress"], learned)
    uniform_map = d / "uniform_map.safetensors"
    uniform_source = d / "uniform_source.safetensors"
    if runner.force or not uniform_source.exists():
        write_uniform_source(learned, uniform_source)
    if runner.force or not uniform_map.exists():
        from safetensors import safe_open

        from semcorr_ros.engine.fusion import FeatureFusion, save_fusion

        with safe_open(str(learned), framework="pt") as f:
            save_fusion(FeatureFusion(json.loads(f.metadata()["keys"])), uniform_map)
    ev = ["--dataset", "pf-willow", "--root", str(data)]
    learned_w = _learned_weights(learned)
    configs = [
        ("effnet", "effnet-lite2 alone (blocks 14/19, equal)", ["--backbone", "effnet-lite2"], "held-out"),
        ("dinov2", "dinov2-s-imgfocus alone (layers 7/8/9, equal)", ["--backbone", "dinov2-s-imgfocus"],
         "held-out"),
        ("uniform_map", "uniform fusion, equal weight per map (1/5 each)", ["--fusion-weights", str(uniform_map)],
         "held-out"),
        ("uniform_source", "uniform fusion, equal weight per source (0.5/0.5)",
         ["--fusion-weights", str(uniform_source)], "held-out"),
        ("hand_set", "hand-set source_weights, effnet 0.7 / dinov2 0.3", ["--fusion-weights", "none"],
         "**in-sample**: weights chosen on this split"),
        ("default", "default: the shipped learned weights (semcorr_ros/models/fusion_default.safetensors, "
         "trained on rendered scenes of seeds 5000-5005)", [], "held-out (no PF-WILLOW image in training)"),
        ("learned_synth", "learned fusion, trained on synthetic scenes only ("
         + ", ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in learned_w.items()) + ")",
         ["--fusion-weights", str(learned)], "held-out (no PF-WILLOW image in training)"),
    ]
    rows = []
    for name, label, engine, note in configs:
        row = eval_and_bench(runner, "fusion", name, ev, engine)
        rows.append({"name": name, "configuration": label, "data": f"pf-willow-dev, all {row['pairs']} pairs",
                     "note": note, **row})
    return {"title": "Fusion (pf-willow-dev)", "train_command": train["display"], "learned_weights": learned_w,
            "rows": rows}


# ----------------------------------------------------------------------------------------------- block 2


def block_matcher(runner: Runner, data: Path, epochs: int, timeout: float, weights: Path | None,
                  fallback: Path) -> dict:
    d = runner.out / "kbcnet"
    head_note = ""
    train_display = None
    if weights is None:
        head = d / f"fold_a_e{epochs}.safetensors"
        cmd = [_semcorr(), "train-kbcnet", "--dataset", "pf-willow", "--root", str(data), "--categories",
               FOLD_A_TRAIN, "--resolution", "32", "--epochs", str(epochs), "--seed", "0", "--out", str(head),
               "--no-progress"]
        try:
            rec = runner.run(f"kbcnet_train_e{epochs}", cmd, head, timeout=timeout)
            train_display = rec["display"]
            secs = rec.get("seconds") or rec.get("seconds_earlier_run")
            head_note = f"head trained here, {epochs} epoch(s)" + (f", {secs:.0f} s of training" if secs else "")
        except StepFailed as exc:
            if not fallback.is_file():
                raise
            print(f"[warn] {exc}; falling back to {fallback}", flush=True)
            head = fallback
            train_display = display(cmd) + f"  # ran past {timeout:.0f} s; not used"
            head_note = (f"training {epochs} epoch(s) ran past {timeout:.0f} s under load: reused "
                         f"{display([str(fallback)])} (3 epochs, the docs/kbcnet.md `e3` head)")
    else:
        head = weights
        head_note = f"head given with --kbcnet-weights: {display([str(weights)])}"
    ev = ["--dataset", "pf-willow", "--root", str(data), "--categories", FOLD_A_EVAL]
    rows = []
    for name, label, engine in (("nn", "matcher nn (default)", ["--matcher", "nn"]),
                                ("kbcnet", f"matcher kbcnet ({head_note})",
                                 ["--matcher", "kbcnet", "--kbcnet-weights", str(head)])):
        row = eval_and_bench(runner, "kbcnet", name, ev, engine)
        rows.append({"name": name, "configuration": label,
                     "data": f"pf-willow-dev fold A held-out sub-classes {FOLD_A_EVAL}, {row['pairs']} pairs",
                     "note": "held-out (head trained on " + FOLD_A_TRAIN + ")", **row})
    # the projected fusion (semcorr-fusion-v2) on the same fold, against uniform fusion on the same pairs
    proj = d / "fusion_projected_fold_a.safetensors"
    fusion_train = runner.run("fusion_train_projected_fold_a", [
        _semcorr(), "train-fusion", "--dataset", "pf-willow", "--root", str(data), "--categories", FOLD_A_TRAIN,
        "--fusion-model", "projected", "--seed", "0", "--out", str(proj), "--json",
        str(d / "fusion_projected_fold_a.json"), "--no-progress"], proj)
    uniform = d / "uniform_source.safetensors"
    if runner.force or not uniform.exists():
        write_uniform_source(proj, uniform)
    for name, label, engine, note in (
            ("nn_uniform_source", "matcher nn, uniform fusion (equal weight per source)",
             ["--fusion-weights", str(uniform)], "held-out (no trained parameter)"),
            ("nn_projected", "matcher nn, projected fusion (`--fusion-model projected`, rank 64)",
             ["--fusion-weights", str(proj)], "held-out (fusion trained on " + FOLD_A_TRAIN + ")")):
        row = eval_and_bench(runner, "kbcnet", name, ev, engine)
        rows.append({"name": name, "configuration": label,
                     "data": f"pf-willow-dev fold A held-out sub-classes {FOLD_A_EVAL}, {row['pairs']} pairs",
                     "note": note, **row})
    return {"title": "Matcher and projected fusion (pf-willow-dev, fold A)", "train_command": train_display,
            "head": str(head), "head_note": head_note, "fusion_train_command": fusion_train["display"],
            "rows": rows}


# ----------------------------------------------------------------------------------------------- block 3


def _wait_for(path: Path, until: str | None) -> bool:
    if path.is_file() or not until:
        return path.is_file()
    hh, mm = (int(x) for x in until.split(":"))
    now = dt.datetime.now(dt.timezone.utc)
    deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    while not path.is_file() and dt.datetime.now(dt.timezone.utc) < deadline:
        print(f"[wait] {path} absent; polling until {until} UTC", flush=True)
        time.sleep(30)
    return path.is_file()


def block_synth(runner: Runner, summary_path: Path, wait_until: str | None) -> dict:
    t_wait = time.perf_counter()
    present = _wait_for(summary_path, wait_until)
    waited = round(time.perf_counter() - t_wait, 1)
    produce = ".venv/bin/python lab/synth_benchmark.py --out " + display([str(summary_path.parent)])
    block = {"title": "Depth-aware weighting and KBC (synthetic RGB-D scenes)", "summary": str(summary_path),
             "produce_command": produce, "rows": [], "waited_s": waited}
    if not present:
        block["missing"] = True
        return block
    summary = _load(summary_path)
    block["summary_command"] = summary.get("command")
    block["seeds"], block["frames"] = summary.get("seeds"), summary.get("frames")
    variants = summary["variants"]
    order = [n for n in SYNTH_VARIANTS if n in variants] + [n for n in variants if n not in SYNTH_VARIANTS]
    for name in order:
        v = variants[name]
        flags = shlex.split(v.get("flags") or "")
        label = SYNTH_VARIANTS[name][0] if name in SYNTH_VARIANTS else f"extra variant `{name}` ({' '.join(flags)})"
        be_json = runner.out / "synth" / f"{name}_bench.json"
        be = runner.run(f"synth_{name}_bench", [_semcorr(), "bench", "--frames", str(BENCH_FRAMES), *flags,
                                                "--no-progress", "--json", str(be_json)], be_json)
        b = _load(be_json)
        scenes = v.get("scenes")
        block["rows"].append({
            "name": name, "configuration": label, "setting": v["setting"],
            "data": f"synthetic {v['setting']} scenes ({scenes} scenes x {summary.get('frames')} frames, "
                    f"{v['keypoints']} keypoints)",
            "pck_005": v["pck"]["0.05"], "pck_01": v["pck"]["0.1"], "pck_015": v["pck"].get("0.15"),
            "pose_validity": v.get("pose_validity"), "error_3d_mm_median": v.get("error_3d_mm_median"),
            "engine_ms_p50_bag_eval": v.get("engine_ms_p50"),
            "latency_p50_ms": b["latency_ms"]["p50"], "match_p50_ms": b["stages_ms_p50"].get("match"),
            "kbc_used_in_bench": b.get("kbc_used"),
            "eval_command": f"semcorr bag-eval SCENE/bag --reference SCENE/reference.yaml --mode offline "
                            f"{' '.join(flags)}".strip() + " (per scene, by lab/synth_benchmark.py)",
            "bench_command": be["display"]})
    return block


# ----------------------------------------------------------------------------------------------- output


def _f(x, nd=3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _ms(x) -> str:
    return "-" if x is None else f"{x:.0f}"


def _load_range(steps: list[dict]) -> str | None:
    loads = [s["load_at_start"] for s in steps if s.get("load_at_start") is not None]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else None


def _reference(key: str, rows: list[dict]) -> dict[str, float]:
    """PCK@0.1 of the reference row per setting (key: block; "" = the whole block)."""
    by_name = {r["name"]: r for r in rows}
    if key == "fusion" and "uniform_source" in by_name:
        return {"": by_name["uniform_source"]["pck_01"]}
    if key == "matcher" and "nn" in by_name:
        return {"": by_name["nn"]["pck_01"]}
    ref = {}
    for setting, name in (("normal", "default"), ("small", "kbc-auto")):
        if name in by_name:
            ref[setting] = by_name[name]["pck_01"]
    return ref


def _delta(key: str, row: dict, ref: dict[str, float]) -> str:
    base = ref.get("") if key != "synth" else ref.get(row.get("setting", ""))
    return "-" if base is None else f"{100 * (row['pck_01'] - base):+.1f}"


def markdown(result: dict) -> str:
    lines = [
        "# Ablation",
        "",
        "Produced by `.venv/bin/python lab/ablation.py` (this page and `out/ablation/ablation.json`; every "
        "command it ran is logged under `out/ablation/logs/`). PCK is per keypoint, bbox threshold, pooled over "
        "the data of the row. Latency: `semcorr bench --frames " + str(BENCH_FRAMES) + "` (640x480 RGB-D "
        "frame, p50 of the whole `process` call and of its `match` stage) with the row's engine flags.",
        "",
        f"**Machine.** {result['machine']}. It was shared with other jobs while these runs went (1-minute load "
        f"average {result.get('load_range') or '?'} at the starts of the commands), so the latencies are inflated "
        "and only comparable within a table, and even there only roughly (+-20 %); the README's Speed section "
        "has figures from an idle machine.",
        "",
        "Δ@0.1 is the difference in PCK@0.1 (points) to the block's reference row: equal weight per source "
        "(fusion), nn (matcher), the default of the row's setting (synthetic: depth-aware on for `normal` scenes, "
        "KBC auto for `small` scenes).",
        "",
        f"Wall time: {result.get('compute_s', 0):.0f} s of commands in all (training, evaluation and bench, "
        f"summed over the steps, including steps done by an earlier invocation whose outputs were reused); the "
        f"invocation that wrote this page took {result['wall_s']:.0f} s, of which "
        f"{result.get('waited_s', 0):.0f} s waiting for the synthetic benchmark ({result['finished_utc']}; "
        f"steps skipped because their output existed: {result['skipped_steps']}).",
        "",
    ]
    for key in ("fusion", "matcher", "synth"):
        block = result["blocks"].get(key)
        if block is None:
            continue
        lines += [f"## {block['title']}", ""]
        if key == "fusion":
            lines += [
                "All 450 ordered pairs of pf-willow-dev (5 sub-classes x 10 images). The single-source and "
                "uniform rows have no trained parameter, so they are held-out; the hand-set weights "
                "(0.7/0.3, `--fusion-weights none`) were chosen on this very split, so their row is "
                "in-sample and optimistic; the shipped default and the learned row were trained by `semcorr "
                "train-fusion --dataset synth` on rendered scenes only (they never saw a PF-WILLOW image; the "
                "shipped file's command is in docs/training.md, \"Shipped default\"), the learned row with:", "",
                f"    {block['train_command']}", "",
                "The uniform fusion files were written by `lab/ablation.py` itself (`FeatureFusion` + "
                "`save_fusion`, the map names taken from the learned file).", ""]
        elif key == "matcher":
            lines += [
                f"Fold A of docs/kbcnet.md: the head is trained on `{FOLD_A_TRAIN}` and both matchers are "
                f"evaluated on the held-out sub-classes `{FOLD_A_EVAL}`. KBCNet: {block['head_note']}.", ""]
            if block.get("train_command"):
                lines += [f"    {block['train_command']}", ""]
            if block.get("fusion_train_command"):
                lines += ["The projected fusion (docs/training.md, \"Projected fusion\") is trained on the same "
                          "training sub-classes:", "", f"    {block['fusion_train_command']}", ""]
        elif key == "synth":
            if block.get("missing"):
                lines += [f"`{block['summary']}` did not exist when this page was written. Produce it with",
                          "", f"    {block['produce_command']}", "",
                          "and re-run `lab/ablation.py` (the other blocks are skipped as done).", ""]
                continue
            lines += [
                "Read from the synthetic benchmark's summary (`lab/synth_benchmark.py`: per seed one mug, "
                "bottle and lamp scene with depth noise; `normal` = object ~6-12 % of the image, `small` = "
                "~2-3 %; each scene scored by `semcorr bag-eval --mode offline`), not re-run here:", "",
                f"    {block['produce_command']}", "",
                f"(seeds {block.get('seeds')}, {block.get('frames')} frames per scene.) The extra column "
                "'bag-eval p50' is the engine time per frame inside those runs, measured whenever the benchmark "
                "last ran and with whatever else the machine ran then: compare it within this table only, and use the "
                "latency column for speed.", ""]
            ref = _reference(key, block["rows"])
            lines += ["| configuration | data | PCK@0.05 | PCK@0.1 | Δ@0.1 | latency p50 (ms) | match p50 (ms) | "
                      "bag-eval p50 (ms) | pose valid | command |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for r in block["rows"]:
                lines.append(f"| {r['configuration']} | {r['data']} | {_f(r['pck_005'])} | {_f(r['pck_01'])} | "
                             f"{_delta(key, r, ref)} | "
                             f"{_ms(r['latency_p50_ms'])} | {_ms(r['match_p50_ms'])} | "
                             f"{_ms(r['engine_ms_p50_bag_eval'])} | {_f(r['pose_validity'], 2)} | "
                             f"`{r['eval_command']}`; `{r['bench_command']}` |")
            lines.append("")
            continue
        ref = _reference(key, block["rows"])
        lines += ["| configuration | data | PCK@0.05 | PCK@0.1 | Δ@0.1 | latency p50 (ms) | match p50 (ms) | command |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in block["rows"]:
            lines.append(f"| {r['configuration']} | {r['data']}; {r['note']} | {_f(r['pck_005'])} | "
                         f"{_f(r['pck_01'])} | {_delta(key, r, ref)} | {_ms(r['latency_p50_ms'])} | "
                         f"{_ms(r['match_p50_ms'])} | "
                         f"`{r['eval_command']}`; `{r['bench_command']}` |")
        lines.append("")
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _machine() -> str:
    cores = os.cpu_count()
    return f"{cores} CPU cores, no GPU" if cores else "CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", type=Path, default=Path("out/ablation"), help="output folder (default out/ablation)")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "ablation.md", help="markdown page to write")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="pf-willow-dev folder")
    p.add_argument("--blocks", nargs="+", choices=("fusion", "matcher", "synth"),
                   default=["fusion", "matcher", "synth"])
    p.add_argument("--force", action="store_true", help="re-run steps whose output exists")
    p.add_argument("--synth-scenes", type=int, default=6, help="train-fusion synth scenes per category (6)")
    p.add_argument("--synth-frames", type=int, default=8, help="train-fusion synth frames per scene (8)")
    p.add_argument("--kbcnet-epochs", type=int, default=1)
    p.add_argument("--kbcnet-timeout", type=float, default=480.0,
                   help="seconds the head's training may take before falling back (default 480)")
    p.add_argument("--kbcnet-fallback", type=Path, default=REPO / "out" / "kbcnet" / "e3.safetensors")
    p.add_argument("--kbcnet-weights", type=Path, default=None, help="use this head, do not train one")
    p.add_argument("--synth-summary", type=Path, default=REPO / "out" / "synth_benchmark" / "summary.json")
    p.add_argument("--wait-synth-until", default=None, metavar="HH:MM",
                   help="poll for --synth-summary until this UTC time (default: do not wait)")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "ablation.json"
    previous = _load(json_path) if json_path.is_file() else {}
    runner = Runner(out, args.force, previous.get("steps"))
    t0 = time.perf_counter()
    load_before = round(os.getloadavg()[0], 1)
    blocks = dict(previous.get("blocks", {}))
    failures = []

    def finish() -> dict:
        result = {"command": shlex.join([Path(sys.executable).name, "lab/ablation.py", *(argv or sys.argv[1:])]),
                  "machine": _machine(), "load_before": load_before, "load_after": round(os.getloadavg()[0], 1),
                  "wall_s": round(time.perf_counter() - t0, 1),
                  "finished_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  "skipped_steps": sum(1 for s in runner.steps if s.get("skipped")),
                  "compute_s": round(sum((s.get("seconds") or s.get("seconds_earlier_run") or 0.0)
                                         for s in runner.steps), 1),
                  "waited_s": round(sum(b.get("waited_s", 0.0) for b in blocks.values()), 1),
                  "load_range": _load_range(runner.steps),
                  "steps": runner.steps, "blocks": blocks, "failed_blocks": failures}
        _write(json_path, json.dumps(result, indent=2) + "\n")
        _write(args.doc.resolve(), markdown(result))
        return result

    for name in args.blocks:
        try:
            if name == "fusion":
                blocks[name] = block_fusion(runner, args.data.resolve(), args.synth_scenes, args.synth_frames)
            elif name == "matcher":
                blocks[name] = block_matcher(runner, args.data.resolve(), args.kbcnet_epochs, args.kbcnet_timeout,
                                             args.kbcnet_weights and args.kbcnet_weights.resolve(),
                                             args.kbcnet_fallback.resolve())
            else:
                blocks[name] = block_synth(runner, args.synth_summary.resolve(), args.wait_synth_until)
        except StepFailed as exc:
            print(f"ablation: block {name}: {exc}", file=sys.stderr)
            failures.append(name)
        finish()  # the page is current after every block (block 3 may wait for the synthetic benchmark)
    result = finish()
    print(markdown(result))
    print(f"wrote {json_path} and {args.doc} in {result['wall_s']:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
