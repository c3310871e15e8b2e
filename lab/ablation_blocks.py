"""lab/ablation.py, the three blocks of tables: ``fusion`` (:func:`block_fusion`, pf-willow-dev), ``matcher``
(:func:`block_matcher`, fold A of docs/kbcnet.md, with the projected fusion) and ``synth``
(:func:`block_synth`, read from lab/synth_benchmark.py's summary.json), each a dict with a title, the training
commands and its rows; plus the uniform fusion file they compare against (:func:`write_uniform_source`).

Units: PCK as a fraction (0..1), latencies in milliseconds, 3D errors in millimetres, times in seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import time
from pathlib import Path

from ablation_steps import BENCH_FRAMES, Runner, StepFailed, _load, _semcorr, display, eval_and_bench

FOLD_A_TRAIN = "car(G),motorbike(G),winebottle(M)"
FOLD_A_EVAL = "car(M),motorbike(S)"

# Synthetic-benchmark variants of block 3, in table order (the flags come from the summary; extra variants of the
# summary follow these rows).
SYNTH_VARIANTS = {
    "default": ("depth-aware on (default)", []),
    "no-depth-aware": ("depth-aware off", ["--no-depth-aware"]),
    "kbc-off": ("KBC off", ["--kbc", "off"]),
    "kbc-auto": ("KBC auto (default)", ["--kbc", "auto"]),
    "kbc-on": ("KBC on", ["--kbc", "on"]),
}


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
