"""Fixtures and helpers shared by the export and calibration tests (imported by those modules; conftest.py is
shared with the other parts). Artifacts are converted once per module into tmp_path_factory folders; the TFLite
float conversion is also cached in-process by the exporter, so fp16/int8 reuse it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from egeunet_deploy.model.metrics import dice

MAX_ABS_FP32 = 1e-4
AGREE_FP32 = 0.999
AGREE_FP16 = 0.995
AGREE_INT8_FLOOR = 0.9  # int8 only has to run and be measured (issue 6); this floor only catches a broken recipe


@pytest.fixture(scope="session")
def calib_path(tmp_path_factory) -> Path:
    """The bundled-sample calibration set (64 real ISIC train images), built once per session."""
    from egeunet_deploy.calibration import bundled_calibration_set

    return bundled_calibration_set(tmp_path_factory.mktemp("calibration"))


@pytest.fixture(scope="session")
def reference_probs(shipped, sample_test_set) -> np.ndarray:
    """PyTorch probabilities (N, H, W) of the shipped weights on the 32 bundled test images."""
    from egeunet_deploy.model.evaluate import predict_probs

    torch.set_num_threads(1)
    return predict_probs(shipped[0], sample_test_set.images)


def run_artifact(path: Path, images: np.ndarray) -> np.ndarray:
    """(N, H, W) probabilities of an artifact on uint8 NHWC contract images, through the Runner its target's row names
    (the one way every part runs an artifact; it reads the layout and the preprocessing from the metadata)."""
    from egeunet_deploy.runtimes import runner_for

    runner = runner_for(path, threads=1)
    try:
        return runner.run(images)
    finally:
        runner.close()


def torch_self_noise(net, images: np.ndarray) -> float:
    """How far PyTorch is from itself: max |prob| difference between its channels_last (the reference) and
    contiguous NCHW evaluations of the same images. Reported when an fp32 tolerance fails, for scale."""
    from egeunet_deploy.model.contract import to_model_input
    from egeunet_deploy.model.evaluate import predict_probs

    with torch.no_grad():
        contiguous = torch.sigmoid(net.forward_logits(to_model_input(images))[1])[:, 0].numpy()
    return float(np.abs(contiguous - predict_probs(net, images)).max())


def torch_contiguous_probs(net, images: np.ndarray) -> np.ndarray:
    """PyTorch's other evaluation of the same function: contiguous NCHW (the reference runs channels_last)."""
    from egeunet_deploy.model.contract import to_model_input

    with torch.no_grad():
        return torch.sigmoid(net.forward_logits(to_model_input(images))[1])[:, 0].numpy()


def assert_fp32_close(probs: np.ndarray, reference: np.ndarray, net, images: np.ndarray) -> None:
    """Within MAX_ABS_FP32 of PyTorch. PyTorch itself has two evaluations of the network that differ (channels_last,
    the reference, and contiguous NCHW; 1.4e-4 apart on the bundled test images with the epoch-36 weights, 1.0e-4 on
    six of them with epoch 117): an artifact passes when it is within the tolerance of either of them."""
    diff = float(np.abs(probs - reference).max())
    if diff > MAX_ABS_FP32:
        other = float(np.abs(probs - torch_contiguous_probs(net, images)).max())
        if other > MAX_ABS_FP32:
            raise AssertionError(f"max abs prob diff {diff:.2e} (channels_last) / {other:.2e} (contiguous) > "
                                 f"{MAX_ABS_FP32:.0e}; for scale, PyTorch's own channels_last vs contiguous results "
                                 f"differ by {torch_self_noise(net, images):.2e}")
    assert agreement(probs, reference) >= AGREE_FP32


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Dice between the thresholded masks of two probability maps (the drift report's mask agreement)."""
    return dice(a >= 0.5, b >= 0.5)


def assert_same_masks(probs, reference) -> None:
    """Thresholded masks equal, except at pixels whose reference probability lies within the two maps' difference of
    the threshold: float noise may flip those and only those (a real mismatch flips pixels far from 0.5)."""
    probs, reference = np.asarray(probs), np.asarray(reference)
    noise = np.abs(probs - reference)
    flipped = (probs >= 0.5) != (reference >= 0.5)
    far = np.abs(reference - 0.5)[flipped] > noise[flipped]
    assert not far.any(), f"{int(far.sum())} pixels flip although their probability is not within noise of 0.5"


def no_temp_files(folder: Path) -> list[Path]:
    """Leftovers of an interrupted/failed write (atomic writes use hidden ``.<name>.*.tmp`` names)."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
