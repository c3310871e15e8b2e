"""lab/ablation.py, the page: :func:`markdown` renders the result (``ablation.json``) as docs/ablation.md, one
table per block; each row: configuration, data, PCK@0.05, PCK@0.1, the difference Δ@0.1 in points to the block's
reference row, latency and match p50 (ms), and the commands.
"""

from __future__ import annotations

from ablation_blocks import FOLD_A_EVAL, FOLD_A_TRAIN
from ablation_steps import BENCH_FRAMES


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
