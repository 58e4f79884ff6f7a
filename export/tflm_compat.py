"""Flatbuffer passes that make a TFLite graph loadable by TensorFlow Lite Micro without changing a single value.

Why this exists: TFLite Micro's CONCATENATION takes at most 10 inputs (``kMaxInputNum`` in
``tensorflow/lite/micro/kernels/concatenation.cc``). The rewrite nests its wide concatenations in the PyTorch
module (``export.rewrite._Layout.cat``), but litert-torch folds a concatenation of concatenations back into one op:
the converted graph still has 12-input CONCATENATIONs (the regrouped GABs' ``[h_i, l_i, mask] x 4``), and TFLite
Micro refuses it ("num_inputs <= kMaxInputNum was not true", node CONCATENATION failed to prepare). So the split is
done where no converter can undo it, on the flatbuffer: each wide CONCATENATION becomes inner CONCATENATIONs of at
most ``max_inputs`` inputs feeding an outer one, along the same axis. Inner outputs take the output tensor's type
and quantization; the pass only applies when every input shares them (a quantized concatenation then only copies
bytes), so the result is bit-identical in every runtime.
"""

from __future__ import annotations

import copy

TFLM_MAX_CONCAT_INPUTS = 10
"""``kMaxInputNum`` of TFLite Micro's concatenation kernel."""


def _same_quantization(a, b) -> bool:
    qa, qb = a.quantization, b.quantization
    if qa is None or qb is None:
        return qa is None and qb is None
    return (list(qa.scale if qa.scale is not None else []) == list(qb.scale if qb.scale is not None else [])
            and list(qa.zeroPoint if qa.zeroPoint is not None else [])
            == list(qb.zeroPoint if qb.zeroPoint is not None else []))


def split_wide_concats(flatbuffer: bytes, max_inputs: int = TFLM_MAX_CONCAT_INPUTS) -> tuple[bytes, int]:
    """Every CONCATENATION with more than ``max_inputs`` inputs nested into ones of at most ``max_inputs``.
    Returns the new flatbuffer and how many ops were split (0: the input bytes, unchanged)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fu

    if max_inputs < 2:
        raise ValueError(f"max_inputs must be >= 2, got {max_inputs}")
    model = fu.read_model_from_bytearray(bytearray(flatbuffer))
    concat_codes = {i for i, c in enumerate(model.operatorCodes)
                    if max(c.builtinCode, c.deprecatedBuiltinCode) == schema.BuiltinOperator.CONCATENATION}
    split = 0
    for sg in model.subgraphs:
        new_ops = []
        for op in sg.operators:
            inputs = list(op.inputs)
            if op.opcodeIndex not in concat_codes or len(inputs) <= max_inputs:
                new_ops.append(op)
                continue
            out = sg.tensors[op.outputs[0]]
            if any(sg.tensors[t].type != out.type or not _same_quantization(sg.tensors[t], out) for t in inputs):
                raise ValueError(f"CONCATENATION into {out.name!r}: its {len(inputs)} inputs differ in type or "
                                 f"quantization from the output; nesting it would requantize")
            axis = op.builtinOptions.axis % len(out.shape)
            n_groups = -(-len(inputs) // max_inputs)
            step = -(-len(inputs) // n_groups)
            outer_inputs = []
            for g, start in enumerate(range(0, len(inputs), step)):
                chunk = inputs[start : start + step]
                if len(chunk) == 1:
                    outer_inputs.append(chunk[0])
                    continue
                t = copy.deepcopy(out)
                shape = list(out.shape)
                shape[axis] = sum(int(sg.tensors[i].shape[axis]) for i in chunk)
                t.shape = shape
                t.shapeSignature = None
                t.buffer = 0  # an activation: no data
                t.name = (out.name.decode() if isinstance(out.name, bytes) else str(out.name)) + f"/tflm_split{g}"
                sg.tensors.append(t)
                inner = copy.deepcopy(op)
                inner.inputs = chunk
                inner.outputs = [len(sg.tensors) - 1]
                new_ops.append(inner)
                outer_inputs.append(len(sg.tensors) - 1)
            op.inputs = outer_inputs
            new_ops.append(op)
            split += 1
        sg.operators = new_ops
    if not split:
        return flatbuffer, 0
    return bytes(fu.convert_object_to_bytearray(model)), split


def _opcode_index(model, schema, builtin: int) -> int:
    """Index of ``builtin``'s operator code in the model, added when the model has none yet."""
    for i, c in enumerate(model.operatorCodes):
        if max(c.builtinCode, c.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def uint8_cast_as_dequantize(flatbuffer: bytes) -> tuple[bytes, int]:
    """Each CAST uint8 -> float32 becomes a DEQUANTIZE with scale 1 and zero point 0 on its uint8 input: the same
    values (``(q - 0) * 1.0``), but a kernel TFLite Micro has (its CAST refuses uint8 input: "Input type UINT8 (3)
    not supported", node CAST failed to invoke). Returns the new flatbuffer and how many ops changed."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model_from_bytearray(bytearray(flatbuffer))
    cast_codes = {i for i, c in enumerate(model.operatorCodes)
                  if max(c.builtinCode, c.deprecatedBuiltinCode) == schema.BuiltinOperator.CAST}
    changed = 0
    for sg in model.subgraphs:
        for op in sg.operators:
            if op.opcodeIndex not in cast_codes:
                continue
            src, dst = sg.tensors[op.inputs[0]], sg.tensors[op.outputs[0]]
            if src.type != schema.TensorType.UINT8 or dst.type != schema.TensorType.FLOAT32:
                continue
            q = src.quantization or schema.QuantizationParametersT()
            if q.scale is not None and len(q.scale) and (list(q.scale) != [1.0] or list(q.zeroPoint) != [0]):
                raise ValueError(f"uint8 tensor {src.name!r} already carries quantization {list(q.scale)}/"
                                 f"{list(q.zeroPoint)}; a DEQUANTIZE would not be a plain cast")
            q.scale, q.zeroPoint, q.quantizedDimension = [1.0], [0], 0
            src.quantization = q
            op.opcodeIndex = _opcode_index(model, schema, schema.BuiltinOperator.DEQUANTIZE)
            op.builtinOptionsType, op.builtinOptions = 0, None
            changed += 1
    if not changed:
        return flatbuffer, 0
    return bytes(fu.convert_object_to_bytearray(model)), changed


def for_tflite_micro(flatbuffer: bytes) -> tuple[bytes, dict]:
    """Both passes; returns the flatbuffer and what changed ({'concatenations_split': n, 'casts_replaced': m})."""
    fb, n_concat = split_wide_concats(flatbuffer)
    fb, n_cast = uint8_cast_as_dequantize(fb)
    return fb, {"concatenations_split": n_concat, "casts_replaced": n_cast}
