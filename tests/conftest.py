"""Shared fixtures: the bundled real sample, the full ISIC 2017 copy beside the repository, the shipped model.

Every part may add fixtures here; keep them cheap (module- or session-scoped where they build something).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
ISIC2017 = REPO.parent / "shared" / "data" / "isic2017"

# Tests must not fight each other (or a training run) for the two cores: one thread each unless told otherwise.
torch.set_num_threads(int(os.environ.get("EGEUNET_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    from egeunet_deploy.model.bundled import SAMPLE_DATA

    return SAMPLE_DATA


@pytest.fixture(scope="session")
def isic_dir() -> Path:
    if not (ISIC2017 / "train" / "images").is_dir():
        pytest.skip(f"real ISIC 2017 copy not found at {ISIC2017}")
    return ISIC2017


@pytest.fixture(scope="session")
def shipped():
    """(net, ckpt) of the shipped weights, loaded once."""
    from egeunet_deploy.model.checkpoint import load_model

    return load_model()


@pytest.fixture(scope="session")
def sample_test_set(sample_dir):
    from egeunet_deploy.model.data import load_split

    return load_split(sample_dir, "test")


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``exported(target, precision="fp32", **options) -> Path``: a real export of the shipped weights, made once per
    session and option set and shared by every runtime test module (converters take up to a minute)."""
    from egeunet_deploy.export import TARGETS, export

    def make(target: str, precision: str = "fp32", **options) -> Path:
        tag = "_".join(k for k, v in sorted(options.items()) if v) or "default"
        cache = tmp_path_factory.getbasetemp() / f"runtimes_{tag}"
        suffix = TARGETS[target].suffix
        found = sorted(cache.glob(f"*{precision}*{suffix}")) if cache.is_dir() else []
        return found[0] if found else export(target, precision, out_dir=cache, **options)

    return make


@pytest.fixture(scope="session")
def onnx_fp32(exported) -> Path:
    return exported("onnx")


@pytest.fixture(scope="session")
def tflite_fp32(exported) -> Path:
    return exported("tflite")
