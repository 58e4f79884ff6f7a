"""Core ML export: what Linux can check (mlprogram spec, contract I/O, metadata, int8 weights), prediction on
macOS only (skipped elsewhere with the reason), activation int8 refused off macOS with the reason."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from export_fixtures import AGREE_FP32, agreement, reference_probs  # noqa: F401  (fixture)

from egeunet_deploy.export import ExportUnavailable, export
from egeunet_deploy.export.metadata import METADATA_KEY, artifact_digest, read_manifest, read_metadata
from egeunet_deploy.model.contract import CONTRACT

ct = pytest.importorskip("coremltools")
PRECISIONS = ("fp32", "int8w")
pytestmark = pytest.mark.slow  # converts real models (CI runs it: keep it under a minute or two)


@pytest.fixture(scope="module")
def coreml_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml")
    for precision in PRECISIONS:
        export("coreml", precision, out_dir=out, log=None)
    return out


def mil_ops(spec) -> list[str]:
    fn = spec.mlProgram.functions["main"]
    return [op.type for block in fn.block_specializations.values() for op in block.operations]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_spec_has_contract_io(coreml_dir, precision):
    path = coreml_dir / f"egeunet_{precision}.mlpackage"
    spec = ct.utils.load_spec(str(path))
    assert spec.WhichOneof("Type") == "mlProgram"
    (inp,), (out,) = spec.description.input, spec.description.output
    assert inp.name == "image" and inp.type.WhichOneof("Type") == "imageType"
    img = inp.type.imageType
    assert (img.width, img.height) == (256, 256) and img.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    assert out.name == "prob" and list(out.type.multiArrayType.shape) == [1, 256, 256, 1]
    assert out.type.multiArrayType.dataType == ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32


@pytest.mark.parametrize("precision", PRECISIONS)
def test_metadata_in_package_and_manifest(coreml_dir, precision):
    path = coreml_dir / f"egeunet_{precision}.mlpackage"
    meta = read_metadata(path)
    spec = ct.utils.load_spec(str(path))
    assert json.loads(spec.description.metadata.userDefined[METADATA_KEY]) == meta
    assert meta["format"] == "coreml" and meta["precision"] == precision
    assert meta["input"] == {"name": "image", "shape": [1, 256, 256, 3], "dtype": "uint8", "layout": "NHWC"}
    assert meta["preprocessing_in_graph"] is True and meta["contract_sha256"] == CONTRACT.fingerprint()
    assert meta["coreml"]["input_type"].startswith("image")
    assert "coremltools" in meta["tool_versions"]
    assert spec.description.metadata.shortDescription.startswith("EGE-UNet")
    entry = read_manifest(coreml_dir)["artifacts"][path.name]
    assert (entry["sha256"], entry["size_bytes"]) == artifact_digest(path)


def test_int8w_quantizes_all_weights(coreml_dir):
    fp32 = mil_ops(ct.utils.load_spec(str(coreml_dir / "egeunet_fp32.mlpackage")))
    int8w = mil_ops(ct.utils.load_spec(str(coreml_dir / "egeunet_int8w.mlpackage")))
    dequant = [op for op in int8w if op.startswith("constexpr_")]
    assert not [op for op in fp32 if op.startswith("constexpr_")]
    convs = fp32.count("conv")
    assert len(dequant) >= convs > 0  # every conv weight at least (threshold 0: the small tensors too)
    meta = read_metadata(coreml_dir / "egeunet_int8w.mlpackage")
    assert meta["quantization"]["weights"]["weight_threshold"] == 0


def test_int8w_is_smaller(coreml_dir):
    assert artifact_digest(coreml_dir / "egeunet_int8w.mlpackage")[1] < \
        artifact_digest(coreml_dir / "egeunet_fp32.mlpackage")[1]


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS activation quantization is available")
def test_activation_int8_refused_off_macos_with_reason(tmp_path):
    with pytest.raises(ExportUnavailable, match="macOS"):
        export("coreml", "int8", out_dir=tmp_path, log=None)
    assert not list(tmp_path.glob("*.mlpackage"))


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML prediction needs macOS: coremltools cannot run "
                                                     "models on this OS")
def test_fp32_prediction_matches_pytorch(coreml_dir, sample_test_set, reference_probs):  # noqa: F811
    from PIL import Image

    model = ct.models.MLModel(str(coreml_dir / "egeunet_fp32.mlpackage"))
    probs = np.stack([model.predict({"image": Image.fromarray(im)})["prob"][0, ..., 0]
                      for im in sample_test_set.images])
    assert agreement(probs, reference_probs) >= AGREE_FP32
