"""The target table is the one place a target is declared (issue 18): runners, drift, bench, the CLI and the exporter
interface read it. These tests fail when a second copy of a suffix, a device list or a precision check appears."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from egeunet_deploy.export.exporter import ExportError, check_probabilities
from egeunet_deploy.export.targets import (
    FOLDER_SUFFIXES,
    TARGETS,
    Precision,
    artifact_suffixes,
    target_for_suffix,
)
from egeunet_deploy.export.wrappers import IOSpec

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("model", "calibration", "export", "runtimes", "cli")


def test_every_runner_opens_what_its_formats_rows_say():
    from egeunet_deploy.runtimes import RUNNERS

    for cls in RUNNERS.values():
        want = tuple(s for f in cls.formats for s in TARGETS[f].suffixes) + cls.weights_suffixes
        assert cls.suffixes == want and want, cls.backend


def test_each_target_suffix_runs_in_the_runner_its_row_names(tmp_path):
    from egeunet_deploy.runtimes import RUNNERS, runner_class_for

    for t in TARGETS.values():
        assert t.runner in RUNNERS and t.name in RUNNERS[t.runner].formats, t.name
        for suffix in t.suffixes:
            assert target_for_suffix(suffix.upper()) is t
            assert runner_class_for(tmp_path / f"m{suffix}").backend == t.runner
    assert runner_class_for(tmp_path / "w.pt").backend == "torch"
    with pytest.raises(ValueError, match="no runtime for '.bin'"):
        runner_class_for(tmp_path / "m.bin")
    assert FOLDER_SUFFIXES == (".mlpackage", ".mlmodel") and set(FOLDER_SUFFIXES) <= set(artifact_suffixes())


def test_drift_finds_exactly_the_table_suffixes(tmp_path):
    from egeunet_deploy.runtimes.drift import _fmt_prec_guess, find_artifacts

    for i, s in enumerate(artifact_suffixes()):
        (tmp_path / f"egeunet_int8w{i}{s}").write_bytes(b"")
    (tmp_path / "weights.pt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    found = find_artifacts(tmp_path)
    assert sorted(p.suffix for p in found) == sorted(artifact_suffixes())
    assert _fmt_prec_guess(tmp_path / "egeunet_int8w.mlpackage") == ("coreml", "int8w")
    assert _fmt_prec_guess(tmp_path / "egeunet_int8-full.tflite") == ("tflite", "int8-full")


def test_a_precision_is_parsed_once_with_a_hint():
    assert Precision.parse("int8-full") is Precision.INT8_FULL and f"{Precision.INT8_FULL}" == "int8-full"
    with pytest.raises(ValueError, match="did you mean 'int8-full'"):
        Precision.parse("int8_full")
    assert [p for p in Precision if p.calibrated] == [Precision.INT8, Precision.INT8_FULL]
    for t in TARGETS.values():
        assert all(isinstance(p, Precision) for p in t.precisions), t.name


def test_no_part_compares_a_precision_with_a_string_literal():
    """Past the edge a precision is a member: ``precision == "int8"`` anywhere would be a second validation."""
    names = {p.value for p in Precision}
    hits = []
    for part in PARTS:
        for path in (ROOT / part).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Compare) and any("precision" in ast.unparse(n).lower()
                                                         for n in [node.left, *node.comparators]):
                    consts = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                    if any(c in names for c in consts):
                        hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not hits, hits


def test_the_cli_device_names_are_the_runtimes_devices():
    from egeunet_deploy.cmd_runtimes import DEVICES as CLI_DEVICES
    from egeunet_deploy.runtimes import RUNNERS
    from egeunet_deploy.runtimes.base import DEVICES

    assert CLI_DEVICES == DEVICES
    with pytest.raises(ValueError, match="egeunet bench --device android"):
        RUNNERS["litert"](device="android")


def test_the_smoke_check_judgement_is_shared_and_refuses_what_is_not_a_probability_map():
    spec = IOSpec(layout="NHWC", baked=True)
    good = np.full([1, *spec.output_shape[1:]], 0.25, np.float32)
    check_probabilities(good, spec, "ok")
    for bad, why in [(good * 5, "in \\[1.25"), (good[..., :0], "shaped"), (good * np.nan, "nan/inf")]:
        with pytest.raises(ExportError, match=why):
            check_probabilities(bad, spec, "exported model")


def test_export_refuses_a_graph_its_target_does_not_convert(tmp_path):
    from egeunet_deploy.export import export

    with pytest.raises(ValueError, match="coreml converts the graphs deploy; not 'fast'"):
        export("coreml", "fp32", out_dir=tmp_path, graph="fast", log=None)
    with pytest.raises(ValueError, match="int8 quantizes the 'fast' graph"):
        export("onnx", "int8", out_dir=tmp_path, graph="deploy", log=None)
    assert not any(tmp_path.iterdir())
