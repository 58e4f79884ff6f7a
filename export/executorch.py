"""ExecuTorch: a ``.pte`` program lowered to the XNNPACK delegate, fp32 or int8 (PT2E, XNNPACK quantizer).

PyTorch's own on-device runtime: the module is captured with ``torch.export``, lowered with
``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`` and serialized; the same program runs under
ExecuTorch's C++ runtime on Android/iOS/MCUs and under its Python bindings here (``runtimes/executorch_runner.py``).

- **Graph**: the rewritten network (:func:`.rewrite.fast_module`) in NHWC, the graph TFLite converts, with the
  preprocessing baked in (uint8 image in, probability out), its layout operations in the forms XNNPACK takes
  (:class:`_XnnpackLayout`): 3 XNNPACK partitions instead of 36, 4 portable ops (the preprocessing's image min/max)
  instead of 180, 1.19x LiteRT fp32 at 1 thread instead of 2.03x (interleaved ``egeunet bench``, loaded 2-core host).
  ``graph="deploy"`` exports the plain DeployEGEUNet (slower: the comparison's baseline).
- **int8**: post-training static quantization in PT2E (``prepare_pt2e`` / ``convert_pt2e`` from torchao) with
  ``XNNPACKQuantizer``, calibrated on our calibration set (``calibration/``), then lowered like fp32 so XNNPACK runs
  the quantized convolutions. The LiteRT int8 recipe: convolutions only (symmetric int8 activations, histogram
  observer; per-channel int8 weights), the blocks the ONNX and TFLite recipes keep float
  (``calibration.blame.DEFAULT_FLOAT_BLOCKS``) float. ISIC 2017 test (589): mask agreement 0.9932 with PyTorch, delta
  pooled DSC -0.0008 (bundled 64-image set). Quantizing every op the quantizer takes (add, mul, cat, linear too):
  0.977; with MinMax activation observers 0.961 (val, every op).
- **Metadata**: ExecuTorch programs carry constant methods; the contract record (``metadata.build_metadata``) is the
  method ``egeunet_deploy``, returning its JSON as a uint8 tensor. :func:`read_pte_metadata` reads it back with the
  ExecuTorch runtime (registered in ``metadata.READERS`` when this module is imported, which the runner does).

The program is loaded and run once by the ExecuTorch runtime before it is written (right shape, probabilities), so
a file on disk always runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from egeunet_deploy.model.checkpoint import atomic_write_bytes
from egeunet_deploy.model.ege_unet import EGEUNet

from . import metadata as _metadata
from .exporter import ExportError, ExportJob, check_probabilities
from .rewrite import _Layout
from .targets import GRAPHS, TARGETS, Precision
from .wrappers import IOSpec, deploy_module

METHOD = "forward"
METADATA_METHOD = _metadata.METADATA_KEY
"""The constant method that returns the metadata JSON (uint8 bytes)."""


class _XnnpackLayout(_Layout):
    """The rewrite's NHWC layout operations in the forms the XNNPACK partitioner takes, same function (bit-exact in
    float32): the per-image spatial mean as a keepdim mean over the last two dims of the NCHW view (XNNPACK takes
    ``mean.dim`` only there: its global average pooling), per-channel vectors broadcast by a reshape (a view, where
    indexing gives ``unsqueeze_copy``), channel splits as slices (``slice_copy``, where ``torch.split`` gives
    ``split_with_sizes_copy``). With the rewrite's own forms XNNPACK took the graph in 36 partitions with 180 ops in
    ExecuTorch's portable kernels between them (20 means, 19 splits, 139 unsqueezes), and the int8 program of
    convolutions-only quantization failed at run time (a delegate output of a quantized convolution came back in its
    internal layout: ``Attempted to resize a static tensor``); with these, 3 partitions, and the only portable ops
    are the preprocessing's image min/max (amin, amax, reciprocal)."""

    def smean(self, x: torch.Tensor) -> torch.Tensor:
        if not self.nhwc:
            return super().smean(x)
        n, _, _, c = x.shape
        return x.permute(0, 3, 1, 2).mean(dim=(-1, -2), keepdim=True).reshape(n, c)

    def vec(self, v: torch.Tensor) -> torch.Tensor:
        if v.dim() == 1:
            v = v.reshape(1, -1)
        n, c = v.shape
        return v.reshape(n, 1, 1, c) if self.nhwc else v.reshape(n, c, 1, 1)

    def split(self, x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
        out, start = [], 0
        for s in sizes:
            out.append(x.narrow(self.c, start, s))
            start += s
        return out


def module_for(net: EGEUNet, spec: IOSpec, graph: str = "fast") -> torch.nn.Module:
    from .rewrite import fast_module

    if graph == "fast":
        return fast_module(net, spec.layout, spec.baked, spec.hw, layout_ops=_XnnpackLayout)
    if graph == "deploy":
        return deploy_module(net, spec)
    raise ValueError(f"unknown graph {graph!r}; known: {', '.join(GRAPHS)}")


def float_modules(module: torch.nn.Module) -> list[str]:
    """Submodules kept float: the blocks both other int8 recipes keep float (``calibration.blame
    .DEFAULT_FLOAT_BLOCKS``, chosen by measured blame), by their names in the rewritten module."""
    from egeunet_deploy.calibration.blame import DEFAULT_FLOAT_BLOCKS

    names = dict(module.named_modules())
    return [n for b in DEFAULT_FLOAT_BLOCKS for n in (b, f"fast.{b}") if n in names]


def quantize_pt2e(module: torch.nn.Module, example: torch.Tensor, calib_inputs: np.ndarray) -> torch.nn.Module:
    """PT2E static int8 with the XNNPACK quantizer: the convolutions (symmetric int8 activations, histogram
    observer; per-channel int8 weights) of every block but :func:`float_modules`; the element-wise arithmetic, the
    concatenations and the GroupNorm vector products (``linear``) stay float, as in the ONNX and LiteRT int8
    recipes. Observers are fed one calibration image at a time (the program's batch is 1)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_module_name_filter,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    captured = torch.export.export(module, (example,), strict=False).module()
    quantizer = XNNPACKQuantizer().set_operator_type(torch.ops.aten.conv2d.default,
                                                     get_symmetric_quantization_config(is_per_channel=True))
    in_float = [get_module_name_filter(name) for name in float_modules(module)]
    quantizer.set_filter_function(lambda node: not any(f(node) for f in in_float))  # set_module_name(n, None): no
    prepared = prepare_pt2e(captured, quantizer)
    with torch.no_grad():
        for x in calib_inputs:
            prepared(torch.from_numpy(np.ascontiguousarray(x[None])))
    return convert_pt2e(prepared)


def to_program(module: torch.nn.Module, example: torch.Tensor, meta: dict) -> tuple[bytes, dict]:
    """Lower to XNNPACK and serialize, with the metadata as the constant method :data:`METADATA_METHOD`; also
    returns how the graph was split (XNNPACK partitions, ops left to ExecuTorch's portable kernels)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    blob = torch.frombuffer(bytearray(_metadata.dumps(meta).encode()), dtype=torch.uint8)
    with torch.no_grad():
        exported = torch.export.export(module, (example,), strict=False)
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()],
                                           constant_methods={METADATA_METHOD: blob})
    calls = [str(n.target) for n in edge.exported_program().graph_module.graph.nodes if n.op == "call_function"]
    split = {"delegate_partitions": calls.count("executorch_call_delegate"),
             "portable_ops": sum(1 for c in calls if c not in ("executorch_call_delegate",
                                                              "<built-in function getitem>"))}
    return bytes(edge.to_executorch().buffer), split


def smoke_check(data: bytes, spec: IOSpec) -> None:
    """Load the serialized program in the ExecuTorch runtime and run the example input: right shape,
    probabilities."""
    from executorch.runtime import Runtime

    try:
        program = Runtime.get().load_program(data)
        (y,) = program.load_method(METHOD).execute([spec.example()])
    except Exception as e:
        raise ExportError(f"the ExecuTorch runtime cannot run the exported program ({type(e).__name__}: "
                          f"{e})") from None
    check_probabilities(y.numpy(), spec, "exported program")


def export_executorch(job: ExportJob) -> None:
    """The exporter (export/exporter.py): fp32, or int8 through PT2E, lowered to XNNPACK."""
    net, path, precision, spec, meta = job.net, job.path, job.precision, job.spec, job.meta
    calib_images, graph = job.calib_images, job.graph
    module = module_for(net, spec, graph)
    example = spec.example()
    if precision is Precision.INT8:
        kept_float = float_modules(module)
        module = quantize_pt2e(module, example, spec.feed(calib_images))
        meta["quantization"] = {"tool": "PT2E (torchao prepare_pt2e/convert_pt2e)", "quantizer": "XNNPACKQuantizer",
                                "config": "convolutions only: symmetric int8 activations (HistogramObserver), "
                                          "per-channel int8 weights",
                                "float_modules": kept_float,
                                "calibration_images": int(len(calib_images))}
    meta["graph"] = {"module": graph, "delegate": "XnnpackPartitioner"}
    data, split = to_program(module, example, meta)
    smoke_check(data, spec)
    atomic_write_bytes(path, data)
    job.say(f"executorch {precision}: {split['delegate_partitions']} XNNPACK partitions, {split['portable_ops']} "
            f"ops left to ExecuTorch's portable kernels")


def read_pte_metadata(path: Path) -> dict:
    """The metadata record from the program's constant method (needs the ExecuTorch runtime)."""
    import json

    try:
        from executorch.runtime import Runtime
    except ImportError:
        raise _metadata.MetadataError(f"{path}: reading a .pte program needs executorch "
                                      f"(pip install 'egeunet-deploy[executorch]')") from None
    try:
        program = Runtime.get().load_program(Path(path))
    except Exception as e:
        raise _metadata.NotAModelError(f"{path}: not a loadable ExecuTorch program ({type(e).__name__}: "
                                       f"{str(e).strip()[:120]})") from None
    if METADATA_METHOD not in program.method_names:
        raise _metadata.MetadataError(f"{path}: program has no '{METADATA_METHOD}' method (methods: "
                                      f"{', '.join(sorted(program.method_names))})")
    (blob,) = program.load_method(METADATA_METHOD).execute([])
    try:
        return json.loads(bytes(blob.numpy().astype(np.uint8)).decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise _metadata.MetadataError(f"{path}: '{METADATA_METHOD}' is not a JSON record ({e})") from None


_metadata.READERS.setdefault(TARGETS["executorch"].suffix, read_pte_metadata)
