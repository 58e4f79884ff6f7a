"""The full-integer TFLite graph: integer output, op census, and the check that nothing but preprocessing is float.

Why these steps exist: an NPU compiler (Arm Vela) places an op on the accelerator only if every tensor it touches is
integer, and TFLite Micro loads a model only if every op has a kernel there. ai-edge-quantizer leaves the graph's
output float behind a DEQUANTIZE (convenient on a phone CPU, one more CPU op on an NPU), and nothing in the converter
tells the user which ops are still float. So the ``int8-full`` export (a) ends the graph at the int8 LOGISTIC output,
whose scale and zero point go into the metadata with the contract threshold mapped to its integer value,
(b) counts op types and tensor dtypes (the census printed and stored in the artifact), and (c) refuses a graph with
a float tensor anywhere but the preprocessing at the input.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .exporter import ExportError

PREPROCESSING_FLOAT_OPS = frozenset({"CAST", "DEQUANTIZE", "QUANTIZE", "RESHAPE", "REDUCE_MIN", "REDUCE_MAX",
                                     "MAXIMUM", "MINIMUM", "SUB", "MUL", "DIV", "ADD"})
"""Op types allowed to touch float tensors in a full-integer graph: the contract's per-image min-max stretch (DIV has
no integer kernel on Ethos-U), the uint8 -> float step that starts it (CAST, or DEQUANTIZE with scale 1 for TFLite
Micro) and the QUANTIZE that ends it. Only as the graph's first ops (checked here; ``runtimes.integer_graph`` reads
the same set when TFLite Micro or Vela is handed a file)."""

FLOAT_TYPES = {0: "float32", 1: "float16", 10: "float64", 16: "bfloat16"}
DTYPES = {**FLOAT_TYPES, 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8"}
"""TFLite schema tensor types by number."""


def _op_name(model, op) -> str:
    from ai_edge_litert import schema_py_generated as schema

    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return names.get(builtin, f"BUILTIN_{builtin}")


def integer_output(flatbuffer: bytes) -> tuple[bytes, dict]:
    """Remove the DEQUANTIZE that produces the graph's output, so the graph returns the integer map itself.
    Returns the new flatbuffer and the output's quantization record (dtype, scale, zero point, threshold)."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    from egeunet_deploy.model.contract import CONTRACT

    model = fu.read_model_from_bytearray(bytearray(flatbuffer))
    sg = model.subgraphs[0]
    if len(sg.outputs) != 1:
        raise ExportError(f"expected one graph output, found {len(sg.outputs)}")
    out = sg.outputs[0]
    producer = next((i for i, op in enumerate(sg.operators) if out in op.outputs), None)
    if producer is not None and _op_name(model, sg.operators[producer]) == "DEQUANTIZE":
        new_out = sg.operators[producer].inputs[0]
        del sg.operators[producer]
        sg.outputs = [new_out]
        for sd in model.signatureDefs or []:
            for o in sd.outputs:
                if o.tensorIndex == out:
                    o.tensorIndex = new_out
        sg.tensors[new_out].name = sg.tensors[out].name  # keep the signature's output name on the tensor
        out = new_out
    t = sg.tensors[out]
    dtype = DTYPES.get(t.type, str(t.type))
    if dtype not in ("int8", "uint8", "int16"):
        raise ExportError(f"the graph's output is {dtype}, not an integer map: the quantizer left its last op float")
    scale, zero = float(t.quantization.scale[0]), int(t.quantization.zeroPoint[0])
    info = np.iinfo(dtype)
    threshold_q = int(np.clip(np.ceil(CONTRACT.threshold / scale + zero - 1e-9), info.min, info.max))
    record = {"dtype": dtype, "scale": scale, "zero_point": zero, "threshold": CONTRACT.threshold,
              "threshold_q": threshold_q,
              "meaning": f"probability = (q - {zero}) * {scale:g}; lesion where q >= {threshold_q}"}
    return bytes(fu.convert_object_to_bytearray(model)), record


def _is_constant(model, tensor) -> bool:
    """A tensor with stored data (weights, biases, fixed matrices), as opposed to an activation."""
    if tensor.buffer <= 0 or tensor.buffer >= len(model.buffers):
        return False
    buf = model.buffers[tensor.buffer]
    data = getattr(buf, "data", None)
    return (data is not None and len(data) > 0) or bool(getattr(buf, "size", 0))


def op_census(flatbuffer: bytes) -> dict:
    """Op types, tensor dtypes and every op that touches a float tensor (in graph order) of a TFLite flatbuffer."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model_from_bytearray(bytearray(flatbuffer))
    sg = model.subgraphs[0]
    ops, float_ops = Counter(), []
    activations = set()
    for i, op in enumerate(sg.operators):
        name = _op_name(model, op)
        ops[name] += 1
        touched = [t for t in (*op.inputs, *op.outputs) if t >= 0]
        activations.update(t for t in touched if not _is_constant(model, sg.tensors[t]))
        if any(sg.tensors[t].type in FLOAT_TYPES for t in touched):
            float_ops.append({"index": i, "op": name})
    dtypes = Counter(DTYPES.get(sg.tensors[t].type, str(sg.tensors[t].type)) for t in activations)
    float_tensors = sum(1 for t in activations if sg.tensors[t].type in FLOAT_TYPES)
    return {"ops": dict(sorted(ops.items())), "n_ops": sum(ops.values()),
            "activation_dtypes": dict(sorted(dtypes.items())), "float_tensors": float_tensors,
            "float_ops": [f["op"] for f in float_ops], "float_op_indices": [f["index"] for f in float_ops],
            "quantize_ops": ops.get("QUANTIZE", 0), "dequantize_ops": ops.get("DEQUANTIZE", 0)}


def check_integer_only(census: dict) -> None:
    """Refuse a graph with a float tensor past the preprocessing at its input."""
    idx, names = census["float_op_indices"], census["float_ops"]
    leading = 0
    while leading < len(idx) and idx[leading] == leading and names[leading] in PREPROCESSING_FLOAT_OPS:
        leading += 1
    late = sorted(set(names[leading:]))
    if late:
        where = ", ".join(f"{n}@{i}" for i, n in zip(idx[leading:], names[leading:], strict=True))
        raise ExportError(f"not a full-integer graph: float tensors at ops {where} past the "
                          f"preprocessing ({len(idx) - leading} ops); an NPU or TFLite Micro would refuse them")


def format_census(census: dict) -> str:
    """One line per fact, as ``egeunet export`` prints it."""
    ops = ", ".join(f"{k} {v}" for k, v in sorted(census["ops"].items(), key=lambda kv: -kv[1]))
    dt = ", ".join(f"{k} {v}" for k, v in census["activation_dtypes"].items())
    pre = sorted(set(census["float_ops"]))
    return (f"op census: {census['n_ops']} ops ({ops})\n"
            f"op census: activation tensors by dtype: {dt}; float tensors {census['float_tensors']}, all in the "
            f"preprocessing ops {', '.join(pre) or '-'} at the input; QUANTIZE {census['quantize_ops']}, "
            f"DEQUANTIZE {census['dequantize_ops']}")
