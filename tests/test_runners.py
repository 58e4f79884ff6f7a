"""Runners: every backend runs real exported artifacts like the PyTorch reference, reads the contract from the
artifact's metadata, refuses artifacts that contradict it, and says plainly when it cannot run here."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from export_fixtures import assert_fp32_close

from egeunet_deploy.export.api import TARGETS
from egeunet_deploy.export.metadata import METADATA_KEY
from egeunet_deploy.model.bundled import DEFAULT_WEIGHTS
from egeunet_deploy.runtimes import RUNNERS, ArtifactError, RuntimeUnavailable, runner_class_for, runner_for
from egeunet_deploy.runtimes.coreml_runner import CoreMLRunner
from egeunet_deploy.runtimes.litert_runner import LiteRTRunner
from egeunet_deploy.runtimes.onnx_runner import OnnxRunner
from egeunet_deploy.runtimes.torch_runner import TorchRunner


@pytest.fixture(scope="module")
def images(sample_test_set) -> np.ndarray:
    return sample_test_set.images[:6]


@pytest.fixture(scope="module")
def reference(images) -> np.ndarray:
    return TorchRunner(threads=1).load(DEFAULT_WEIGHTS).run(images)


def with_metadata(src: Path, dst: Path, update: dict | None = None, drop: bool = False) -> Path:
    model = onnx.load(str(src))
    props = [p for p in model.metadata_props if p.key == METADATA_KEY]
    if drop:
        for p in props:
            model.metadata_props.remove(p)
    for p in props if not drop else []:
        meta = json.loads(p.value)
        for k, v in (update or {}).items():
            meta[k] = {**meta[k], **v} if isinstance(v, dict) else v
        p.value = json.dumps(meta)
    onnx.save(model, str(dst))
    return dst


# --- availability and registry ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RUNNERS))
def test_is_available_gives_a_reason(name):
    ok, reason = RUNNERS[name].is_available()
    assert isinstance(ok, bool) and reason
    if not ok:
        assert len(reason) > 20  # a sentence, not a code


def test_coreml_skip_reason_off_macos():
    ok, reason = CoreMLRunner.is_available()
    assert ok == (sys.platform == "darwin" and CoreMLRunner.version() is not None)
    if sys.platform != "darwin":
        assert "macOS" in reason


def test_doctor_cli_lists_every_backend(capsys):
    from egeunet_deploy.main import main

    assert main(["doctor", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    rows = found["runtimes"]
    assert {r["backend"] for r in rows} == set(RUNNERS)
    assert set(RUNNERS) >= {"torch", "onnxruntime", "litert", "coreml", "tflm", "openvino"}
    torch_row = next(r for r in rows if r["backend"] == "torch")
    assert torch_row["accelerators"]["cuda"]["present"] == torch.cuda.is_available()
    converters = {c["target"]: c["available"] for c in found["converters"]}
    assert set(converters) == set(TARGETS)
    assert {k: converters[k] for k in ("onnx", "tflite", "coreml")} == {"onnx": True, "tflite": True, "coreml": True}
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "coreml" in out and "converters (egeunet export):" in out and "int8 needs darwin" in out


def test_a_gpu_delegate_path_that_is_not_a_library_is_named(tmp_path, monkeypatch):
    """$EGEUNET_TFLITE_GPU_DELEGATE set to a file that is not a library: say so, not "not found, set the variable"."""
    fake = tmp_path / "libfake_gpu_delegate.so"
    fake.write_text("not a shared library\n")
    monkeypatch.setenv("EGEUNET_TFLITE_GPU_DELEGATE", str(fake))
    present, detail = LiteRTRunner.accelerators()["gpu"]
    assert not present and f"cannot be loaded: {fake}: " in detail
    assert "not found" not in detail and "set $" not in detail
    monkeypatch.setenv("EGEUNET_TFLITE_GPU_DELEGATE", str(tmp_path / "absent.so"))
    assert f"{tmp_path / 'absent.so'} not found" in LiteRTRunner.accelerators()["gpu"][1]


def test_suffix_registry(tmp_path):
    assert runner_class_for("a.onnx") is OnnxRunner and runner_class_for("b.TFLITE") is LiteRTRunner
    assert runner_class_for("c.mlpackage") is CoreMLRunner and runner_class_for("w.pt") is TorchRunner
    with pytest.raises(ValueError, match="no runtime for '.engine'"):
        runner_class_for(tmp_path / "x.engine")


# --- real artifacts against the reference ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["onnx", "tflite", "tflite-nodelegate", "onnx-raw", "onnx-nhwc"])
def test_runner_matches_pytorch(kind, exported, images, reference, shipped):
    options = {}
    if kind == "onnx":
        path = exported("onnx")
    elif kind.startswith("tflite"):
        path = exported("tflite")
        options = {"delegate": "none"} if kind.endswith("nodelegate") else {}
    else:
        path = exported("onnx", **{kind.split("-")[1]: True})
    runner = runner_for(path, threads=1, **options)
    probs = runner.run(images)
    assert probs.shape == reference.shape and probs.dtype == np.float32
    assert_fp32_close(probs, reference, shipped[0], images)  # 1e-4 of either of PyTorch's own evaluations
    info = runner.info()
    assert info["backend"] == runner.backend and info["version"] and info["threads"] == 1
    assert info["provider"] and info["device"] == "cpu"
    if kind == "onnx-raw":
        assert info["preprocessing_in_graph"] is False and info["input_dtype"] == "float32"
    if kind == "onnx-nhwc":
        assert info["layout"] == "NHWC"
    if kind == "tflite":
        assert info["provider"] == "XNNPACK" and info["delegate_partitions"] >= 1
    if kind == "tflite-nodelegate":
        assert info["delegate_partitions"] == 0


@pytest.mark.parametrize("artifact", ["onnx", "tflite"])
def test_batches_of_any_size_match_single_images(artifact, onnx_fp32, tflite_fp32, images):
    runner = runner_for(onnx_fp32 if artifact == "onnx" else tflite_fp32, threads=1)
    runner.default_batch = 4  # 6 images -> a full batch and a short one (padded for fixed-batch graphs)
    together = runner.run(images)
    alone = np.stack([runner.run(im[None])[0] for im in images])
    np.testing.assert_allclose(together, alone, atol=1e-5)


# --- refusals ---------------------------------------------------------------------------------------------------


def test_other_contract_is_refused(onnx_fp32, tmp_path):
    bad = with_metadata(onnx_fp32, tmp_path / "other_contract.onnx", {"contract_sha256": "0" * 64})
    with pytest.raises(ArtifactError, match="another preprocessing contract"):
        runner_for(bad)


def test_missing_metadata_is_refused(onnx_fp32, tmp_path):
    bare = with_metadata(onnx_fp32, tmp_path / "bare.onnx", drop=True)
    with pytest.raises(ArtifactError, match="only artifacts exported by egeunet-deploy"):
        runner_for(bare)


@pytest.mark.parametrize("update, message", [
    ({"input": {"layout": "NHWC"}}, "colour channels on axis 3"),
    ({"input": {"dtype": "float32"}}, "dtype uint8 instead of the metadata's float32"),
    ({"input": {"layout": "NCWH"}}, "layout"),
])
def test_metadata_that_contradicts_the_graph_is_refused(onnx_fp32, tmp_path, update, message):
    meta = json.loads(next(p.value for p in onnx.load(str(onnx_fp32)).metadata_props if p.key == METADATA_KEY))
    if update.get("input", {}).get("layout") == "NHWC" and meta["input"]["layout"] == "NHWC":
        update = {"input": {"layout": "NCHW"}}
        message = "colour channels on axis 1"
    bad = with_metadata(onnx_fp32, tmp_path / "contradicts.onnx", update)
    with pytest.raises(ArtifactError, match=message):
        runner_for(bad)


@pytest.mark.parametrize("name, cut, message", [
    ("truncated.onnx", lambda b: b[:20000], "not a valid ONNX model (truncated or corrupt"),
    ("empty.onnx", lambda b: b"", "not a valid ONNX model (empty"),
    ("truncated.tflite", lambda b: b[:20000], "not a valid TFLite model (truncated or corrupt"),
    ("cut_metadata.tflite", lambda b: b[:-30], "not a complete TFLite model"),
    ("text.tflite", lambda b: b"just some text, renamed\n", "not a TFLite model (no 'TFL3'"),
])
def test_damaged_files_are_called_damaged(onnx_fp32, tflite_fp32, tmp_path, name, cut, message):
    """A truncated or foreign file is said to be one, not "a model without our metadata" (nor a protobuf traceback)."""
    source = onnx_fp32 if name.endswith(".onnx") else tflite_fp32
    bad = tmp_path / name
    bad.write_bytes(cut(source.read_bytes()))
    with pytest.raises(ArtifactError, match=re.escape(message)) as e:
        runner_for(bad)
    assert "only artifacts exported by egeunet-deploy" not in str(e.value) and str(bad) in str(e.value)


def test_complete_tflite_without_metadata_is_not_called_damaged(tflite_fp32, tmp_path):
    """The damage checks must not misfire: the flatbuffer alone (our zip cut off whole) is a valid model exported
    elsewhere, and is refused for its missing metadata."""
    data = tflite_fp32.read_bytes()
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(data[: data.rfind(b"PK\x03\x04")])
    with pytest.raises(ArtifactError, match="no egeunet_deploy.json associated file.*only artifacts exported"):
        runner_for(bare)


def test_bad_images_are_rejected(onnx_fp32, images):
    runner = runner_for(onnx_fp32, threads=1)
    with pytest.raises(ValueError, match="uint8 images"):
        runner.run(images.astype(np.float32))
    with pytest.raises(ValueError, match="resize"):
        runner.run(np.zeros((1, 128, 128, 3), np.uint8))


def test_missing_artifact(tmp_path):
    with pytest.raises(FileNotFoundError, match="artifact not found"):
        runner_for(tmp_path / "absent.onnx")


# --- accelerators: used when present, a plain reason when absent ---------------------------------------------------


def test_cuda_paths(onnx_fp32, images, reference):
    if torch.cuda.is_available():
        probs = TorchRunner(device="cuda").load(DEFAULT_WEIGHTS).run(images)
        assert float(np.abs(probs - reference).max()) <= 1e-3
    else:
        with pytest.raises(RuntimeUnavailable, match="CUDA requested but absent"):
            TorchRunner(device="cuda").load(DEFAULT_WEIGHTS)
    ok, _ = OnnxRunner.accelerators()["cuda"]
    if ok:
        runner = OnnxRunner(device="cuda").load(onnx_fp32)
        assert runner.info()["provider"] == "CUDAExecutionProvider"
        assert float(np.abs(runner.run(images) - reference).max()) <= 1e-3
    else:
        with pytest.raises(RuntimeUnavailable, match="CUDAExecutionProvider requested but absent"):
            OnnxRunner(device="cuda").load(onnx_fp32)
    # auto picks what exists and says which
    assert OnnxRunner(device="auto").load(onnx_fp32).info()["device"] == ("cuda" if ok else "cpu")


def test_litert_gpu_delegate_present_or_clear(tflite_fp32, images, reference):
    ok, detail = LiteRTRunner.accelerators()["gpu"]
    if ok:
        probs = LiteRTRunner(delegate="gpu").load(tflite_fp32).run(images)
        assert float(np.abs(probs - reference).max()) <= 1e-2
    else:
        with pytest.raises(RuntimeUnavailable, match="GPU delegate not available"):
            LiteRTRunner(delegate="gpu").load(tflite_fp32)
    with pytest.raises(RuntimeUnavailable, match="no CUDA path in LiteRT"):
        LiteRTRunner(device="cuda").load(tflite_fp32)


def test_unknown_provider_and_delegate(onnx_fp32, tflite_fp32):
    with pytest.raises(ValueError, match="unknown ONNX Runtime provider"):
        OnnxRunner(provider="warp-drive").load(onnx_fp32)
    with pytest.raises(ValueError, match="unknown LiteRT delegate"):
        LiteRTRunner(delegate="hexagon").load(tflite_fp32)
    import onnxruntime

    if "OpenVINOExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(RuntimeUnavailable, match="OpenVINOExecutionProvider requested but absent"):
            OnnxRunner(provider="openvino").load(onnx_fp32)


@pytest.mark.slow  # a Core ML conversion (~15 s)
def test_coreml_runs_on_macos_or_skips_after_checking_metadata(exported, images, reference):
    from egeunet_deploy.export import ExportUnavailable

    try:
        path = exported("coreml")
    except ExportUnavailable as e:  # e.g. coremltools not installed: the export part says why
        pytest.skip(str(e))
    runner = CoreMLRunner(device="cpu")
    if CoreMLRunner.is_available()[0]:
        probs = runner.load(path).run(images)
        assert float(np.abs(probs - reference).max()) <= 1e-3
    else:
        with pytest.raises(RuntimeUnavailable, match="macOS"):
            runner.load(path)
        assert runner.spec is not None and runner.spec.format == "coreml"  # the contract was read and checked
