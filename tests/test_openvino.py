"""OpenVINO runs the exported ``.onnx`` artifacts like ONNX Runtime does: same probabilities as PyTorch, in fp32,
with the settings it was asked for read back from the compiled model; it is named per artifact in one interleaved
``egeunet bench`` (``FILE@openvino``) and per run in ``egeunet drift --runtime openvino``."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from export_fixtures import assert_fp32_close

from egeunet_deploy.model.bundled import DEFAULT_WEIGHTS
from egeunet_deploy.runtimes import RUNNERS, runner_class_for
from egeunet_deploy.runtimes.torch_runner import TorchRunner

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="openvino is not installed (pip install egeunet-deploy[openvino])")


@pytest.fixture(scope="module")
def images(sample_test_set) -> np.ndarray:
    return sample_test_set.images[:6]


def test_registered_for_onnx_by_name_only(onnx_fp32):
    assert RUNNERS["openvino"].suffixes == (".onnx",)
    assert runner_class_for(onnx_fp32).backend == "onnxruntime"  # the default for .onnx stays ONNX Runtime
    assert runner_class_for(onnx_fp32, "openvino").backend == "openvino"


def test_fp32_matches_pytorch_and_reports_what_ran(onnx_fp32, images, shipped):
    from egeunet_deploy.runtimes.openvino_runner import OpenVINORunner

    runner = OpenVINORunner(threads=1).load(onnx_fp32)
    probs = runner.run(images)
    reference = TorchRunner(threads=1).load(DEFAULT_WEIGHTS).run(images)
    assert_fp32_close(probs, reference, shipped[0], images)
    info = runner.info()
    assert info["backend"] == "openvino" and info["provider"] == "OpenVINO CPU"
    assert info["compiled"]["INFERENCE_NUM_THREADS"] == "1"
    assert info["compiled"]["PERFORMANCE_HINT"] == "LATENCY"
    assert info["compiled"]["INFERENCE_PRECISION_HINT"] in ("f32", "float32")  # never bf16 on an AMX/BF16 CPU


def test_profile_names_where_time_goes(onnx_fp32, images):
    from egeunet_deploy.runtimes.openvino_runner import OpenVINORunner

    runner = OpenVINORunner(threads=1, perf_count=True).load(onnx_fp32)
    runner.run(images[:1])
    prof = runner.profile()
    assert prof["nodes"] > 50 and prof["total_us"] > 0
    assert {"Convolution", "MatMul"} <= set(prof["by_type"])
    with pytest.raises(ValueError, match="perf_count"):
        OpenVINORunner(threads=1).load(onnx_fp32).profile()


def test_bench_times_one_file_in_two_runtimes_interleaved(onnx_fp32, capsys):
    from egeunet_deploy.main import main

    assert main(["bench", "--artifact", str(onnx_fp32), "--artifact", f"{onnx_fp32}@openvino", "--threads", "1",
                 "--runs", "3", "--warmup", "1", "--e2e-runs", "0", "--no-progress", "--plot",
                 str(onnx_fp32.parent / "ov_bench.png")]) == 0
    out = capsys.readouterr().out
    assert "OpenVINO CPU" in out and "CPUExecutionProvider" in out
    assert f"{onnx_fp32.name}@openvino" in out


def test_bench_refuses_a_runtime_that_cannot_load_the_file(tflite_fp32):
    from egeunet_deploy.runtimes.bench import check_artifact_paths

    with pytest.raises(ValueError, match="runtime 'openvino' loads .onnx"):
        check_artifact_paths([f"{tflite_fp32}@openvino"])
