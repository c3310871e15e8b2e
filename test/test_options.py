"""The option schema: one definition per option; validation, ROS parameters, CLI flags and docs derived from it."""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from semcorr_ros import options
from semcorr_ros.cli.common import add_engine_arguments, engine_config, flag_options, parse_engine_flags
from semcorr_ros.config import DEFAULT_SOURCES, EngineConfig
from semcorr_ros.errors import ConfigError
from semcorr_ros.options import ADVANCED, CORE, EXPERIMENTAL, docs, option
from semcorr_ros.ros import params

DOCS = Path(__file__).resolve().parent.parent / "docs" / "node.md"


# ---------------------------------------------------------------------------------------- one place to add one


@dataclass
class _Extended(EngineConfig):
    """EngineConfig plus one option: the only thing a new option needs (besides the code that reads it)."""

    match_gain: float = option(0.5, "Gain of a new matching stage.", group="matching", range=(0.0, 2.0),
                               tier=ADVANCED)


def test_adding_an_option_touches_one_place() -> None:
    opts = options.options_of(_Extended)
    new = next(o for o in opts if o.name == "match_gain")
    assert (new.engine, new.param, new.flag, new.runtime, new.kind.ros_type) == (
        True, "match_gain", "--match-gain", True, "double")
    # validation
    assert _Extended().match_gain == 0.5 and _Extended(match_gain=2.0).match_gain == 2.0
    with pytest.raises(ConfigError, match=r"match_gain must be a number in \[0.0, 2.0\], got 3.0"):
        _Extended(match_gain=3.0)
    with pytest.raises(ConfigError, match="match_gain"):
        _Extended().replace(match_gain=-1.0)
    # ROS parameter and descriptor
    spec = {p.name: p for p in params.parameters(opts)}["match_gain"]
    d = spec.descriptor()
    assert spec.field == "match_gain" and spec.default == 0.5 and not d.read_only
    assert d.floating_point_range[0].from_value == 0.0 and d.floating_point_range[0].to_value == 2.0
    assert d.description == "Gain of a new matching stage."
    # CLI flag, in the advanced group
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser, opts)
    assert parser.parse_args(["--match-gain", "1.5"]).match_gain == 1.5
    assert parser.parse_args([]).match_gain == 0.5
    help_text = parser.format_help()
    assert help_text.index("\n  --match-gain") > help_text.index("advanced engine options:")
    # docs row
    table = docs.markdown_table(options.schema(extra=[new]))
    assert "| `match_gain` | double | `0.5` | [0.0, 2.0] | yes | advanced | Gain of a new matching stage. |" in table
    assert "match_gain" not in docs.markdown_table()


# ------------------------------------------------------------------------------------------------ docs table


def test_docs_table_is_the_generated_one() -> None:
    text = DOCS.read_text()
    start, end = docs.docs_table(text)
    current = "\n".join(text.split("\n")[start:end]) + "\n"
    assert current == docs.markdown_table(), (
        "docs/node.md's parameter table is out of date: python -m semcorr_ros.options --update-docs docs/node.md")
    assert docs.main(["--check", str(DOCS)]) == 0
    assert docs.update_docs(text) == text


def test_update_docs_rewrites_only_the_table(tmp_path: Path) -> None:
    md = tmp_path / "node.md"
    md.write_text("# x\n\n## Parameters\n\nSome prose.\n\n| a |\n|---|\n| old |\n\nafter\n\n## Next\n\n| keep |\n")
    assert docs.main(["--check", str(md)]) == 1
    assert docs.main(["--update-docs", str(md)]) == 0
    text = md.read_text()
    assert "| old |" not in text and "Some prose." in text and "\nafter\n" in text and "| keep |" in text
    assert docs.main(["--check", str(md)]) == 0
    with pytest.raises(ValueError, match="Parameters"):
        docs.docs_table("# nothing\n")


def test_markdown_command() -> None:
    r = subprocess.run([sys.executable, "-m", "semcorr_ros.options", "--markdown"], capture_output=True, text=True,
                       timeout=120, cwd="/")
    out = r.stdout
    assert r.returncode == 0 and out == docs.markdown_table(), r.stderr
    assert "| `score_threshold` | double | `0.2` | [0.0, 1.0] | yes | core |" in out


# --------------------------------------------------------------------------------------------- the schema


def test_every_option_is_described_once_and_well_formed() -> None:
    every = options.schema()
    names = [o.name for o in every]
    assert len(names) == len(set(names))
    assert len({o.param for o in every if o.param}) == len([o for o in every if o.param])
    assert len({o.flag for o in every if o.flag}) == len([o for o in every if o.flag])
    for o in every:
        assert o.tier in options.TIERS and o.group in options.GROUPS, o.name
        assert o.description and "\n" not in o.description and o.description.endswith("."), o.name
        assert o.check(o.default) == o.default or o.kind.base == "list", o.name  # defaults are valid
    engine = {o.name for o in options.engine_options()}
    assert engine == {f for f in EngineConfig.__dataclass_fields__} - {"layers"}
    assert not engine & {o.name for o in options.node_options()}
    node = {o.name for o in options.node_options()}
    assert {"sync_slop", "stamp_source", "enabled", "max_image_pixels", "reference_file",
            "publish_debug_image"} <= node


def test_tiers() -> None:
    tier = {o.name: o.tier for o in options.schema()}
    experimental = {n for n, t in tier.items() if t == EXPERIMENTAL}
    assert {"consensus_in_crop", "pose_from_prior", "multiscale", "depth_cells", "consensus_mode",
            "matcher"} <= experimental
    assert experimental - {"consensus_in_crop", "pose_from_prior", "multiscale", "depth_cells", "consensus_mode",
                           "matcher"} == {"kbcnet_weights"}  # only used with matcher kbcnet
    for name in ("softargmax_radius", "softargmax_temperature", "cycle_sigma", "consensus_weight", "consensus_sigma",
                 "consensus_threshold", "consensus_min_inliers", "depth_sigma_min", "depth_radius",
                 "pose_iterations", "grid"):
        assert tier[name] == ADVANCED, name
    for name in ("sources", "device", "kbc", "score_threshold", "depth_aware", "consensus_prior", "sync_slop",
                 "reference_file", "enabled"):
        assert tier[name] == CORE, name


def test_validation_errors_name_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"kbc must be one of \('off', 'on', 'auto'\), got 'sometimes'"):
        EngineConfig(kbc="sometimes")
    with pytest.raises(ConfigError, match=r"device must be one of \('auto', 'cpu', 'cuda'\) \(or 'cuda:N'\)"):
        EngineConfig(device="tpu")
    assert EngineConfig(device="cuda:1").device == "cuda:1"
    with pytest.raises(ConfigError, match="sources needs at least 1 entry"):
        EngineConfig(sources=())
    with pytest.raises(ConfigError, match="multiscale needs at least 1 entry and no repeats"):
        EngineConfig(multiscale=(1.0, 1.0))
    with pytest.raises(ConfigError, match=r"multiscale entries must be a number in \[0.25, 4.0\]"):
        EngineConfig(multiscale=(8.0,))
    with pytest.raises(ConfigError, match="multiscale must be a list of numbers"):
        EngineConfig(multiscale=("big",))
    with pytest.raises(ConfigError, match="score_calibration needs 5 entries"):
        EngineConfig(score_calibration=(1.0, 2.0))
    with pytest.raises(ConfigError, match="score_calibration entries must be finite"):
        EngineConfig(score_calibration=(1.0, 2.0, 3.0, 4.0, float("nan")))
    with pytest.raises(ConfigError, match=r"source_weights\['a'\] must be a number"):
        EngineConfig(source_weights={"a": -1.0})
    with pytest.raises(ConfigError, match="grid must be a number in"):
        EngineConfig(grid=True)
    cfg = EngineConfig(sources=["effnet-lite2"], multiscale=[1, 2], score_calibration=[0, 1, 2, 3, 4])
    assert cfg.sources == ("effnet-lite2",) and cfg.multiscale == (1.0, 2.0) and cfg.score_calibration == (
        0.0, 1.0, 2.0, 3.0, 4.0)
    assert EngineConfig(score_calibration=None).score_calibration is None


def test_wire_values_round_trip() -> None:
    opts = {o.name: o for o in options.engine_options()}
    srcs = ("a", "b")
    assert options.from_wire(opts["input_sizes"], [0, 224], "p", srcs) == {"b": 224}
    assert options.to_wire(opts["input_sizes"], {"b": 224}, srcs) == [0, 224]
    assert options.from_wire(opts["source_weights"], [0.5, 2.0], "p", srcs) == {"a": 0.5, "b": 2.0}
    assert options.from_wire(opts["source_weights"], None, "p", srcs) is options.KEEP
    assert options.from_wire(opts["weights"], ["a = /w.pth"], "p") == {"a": "/w.pth"}
    assert options.to_wire(opts["weights"], {"a": "/w.pth"}) == ["a=/w.pth"]
    assert options.from_wire(opts["fusion_weights"], "", "p") is None
    assert options.to_wire(opts["fusion_weights"], None) == ""
    assert options.from_wire(opts["sources"], [" a ", ""], "p") == ("a",)
    assert options.from_wire(opts["score_calibration"], [], "p") is options.KEEP
    with pytest.raises(ConfigError, match="parameter 'x' needs one entry per backbone entry"):
        options.from_wire(opts["source_weights"], [1.0], "parameter 'x'", srcs)
    cfg = EngineConfig(sources=("effnet-lite2", "dinov2-s-imgfocus"), input_sizes={"effnet-lite2": 320},
                       source_weights={"effnet-lite2": 0.2, "dinov2-s-imgfocus": 0.8}, weights={"sd": "/m"},
                       fusion_weights="none", multiscale=(0.75, 1.0), kbc="on", depth_aware=False,
                       score_calibration=None)
    values = params.parameter_values(cfg)
    assert set(values) <= set(params.PARAMETERS_BY_NAME) and "score_calibration" not in values
    assert params.engine_config(values) == cfg.replace(score_calibration=EngineConfig().score_calibration)


def test_schema_modules_do_not_import_rclpy() -> None:
    code = ("import sys, semcorr_ros.options.docs, semcorr_ros.config, semcorr_ros.cli.common; "
            "semcorr_ros.options.docs.markdown_table(); assert 'rclpy' not in sys.modules, 'rclpy imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------------------------------- the CLI


def test_existing_flags_keep_working() -> None:
    cfg = parse_engine_flags([
        "--backbone", "effnet-lite2", "--weights", "effnet-lite2=/w.pth", "--fusion-weights", "none",
        "--device", "cpu", "--fp16", "--no-cpu-bf16", "--kbc", "on", "--kbc-margin", "0.3",
        "--kbc-max-fraction", "0.2", "--no-depth-aware", "--depth-floor", "0.5", "--depth-spread", "2",
        "--depth-cells", "max", "--score-threshold", "0.3", "--softargmax-radius", "3",
        "--softargmax-temperature", "0.05", "--no-consensus-prior", "--consensus-weight", "0.3",
        "--consensus-sigma", "0.2", "--consensus-mode", "3d", "--consensus-in-crop", "--pose-from-prior",
        "--multiscale", "0.75,1", "--matcher", "kbcnet", "--kbcnet-weights", "/k.safetensors", "--threads", "0"])
    assert cfg == EngineConfig(
        sources=("effnet-lite2",), weights={"effnet-lite2": "/w.pth"}, fusion_weights="none", device="cpu",
        fp16=True, cpu_bf16=False, kbc="on", kbc_margin=0.3, kbc_max_fraction=0.2, depth_aware=False,
        depth_floor=0.5, depth_spread=2.0, depth_cells="max", score_threshold=0.3, softargmax_radius=3,
        softargmax_temperature=0.05, consensus_prior=False, consensus_weight=0.3, consensus_sigma=0.2,
        consensus_mode="3d", consensus_in_crop=True, pose_from_prior=True, multiscale=(0.75, 1.0),
        matcher="kbcnet", kbcnet_weights="/k.safetensors")
    assert parse_engine_flags([]) == EngineConfig()
    assert parse_engine_flags(["--backbone", "default"]).sources == DEFAULT_SOURCES
    assert parse_engine_flags(["--consensus-prior", "--no-consensus-in-crop"]) == EngineConfig()
    assert parse_engine_flags(["--backbone", "effnet-lite2,dinov2-s-imgfocus", "--input-sizes", "320,0",
                               "--source-weights", "1,3", "--grid", "24"]) == EngineConfig(
        input_sizes={"effnet-lite2": 320}, source_weights={"effnet-lite2": 1.0, "dinov2-s-imgfocus": 3.0}, grid=24)
    with pytest.raises(ConfigError, match="--weights expects SOURCE=PATH"):
        parse_engine_flags(["--weights", "nopath"])
    with pytest.raises(ConfigError, match="--multiscale expects comma-separated numbers"):
        parse_engine_flags(["--multiscale", "1,big"])
    with pytest.raises(ConfigError, match="--source-weights needs one entry per backbone entry"):
        parse_engine_flags(["--source-weights", "1"])
    with pytest.raises(SystemExit):
        parse_engine_flags(["--kbc", "sometimes"])


def test_every_engine_option_but_layers_is_a_flag() -> None:
    flagged = {o.name for o in flag_options() if o.engine}
    assert flagged == {o.name for o in options.engine_options()}
    assert {o.flag for o in flag_options() if not o.engine} == {"--threads"}


def test_help_shows_core_flags_first() -> None:
    from semcorr_ros.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["bench"].format_help()
    core, adv, exp = (text.index(t) for t in ("engine options:", "advanced engine options:",
                                              "experimental engine options:"))
    assert core < adv < exp
    flag = {f: text.index("\n  " + f) for f in ("--score-threshold", "--softargmax-radius", "--matcher")}
    assert core < flag["--score-threshold"] < adv < flag["--softargmax-radius"] < exp < flag["--matcher"]
    args = parser.parse_args(["bench", "--depth-cells", "max", "--threads", "2"])
    assert args.threads == 2 and engine_config(argparse.Namespace(**{**vars(args), "threads": None})).depth_cells \
        == "max"
