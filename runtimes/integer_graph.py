"""Which ops of a TFLite graph touch float tensors, and whether that is only the contract's preprocessing.

Integer-only targets (TFLite Micro's kernels, Arm's Ethos-U NPUs through Vela) take a graph whose ops are integer,
except that a compiler leaves a few ops to the host CPU. For this project's full-integer artifact that is the
contract's per-image min-max stretch at the input (CAST, REDUCE_MIN/MAX, MAXIMUM, DIV: Ethos-U has no integer DIV)
and at most the graph's I/O QUANTIZE/DEQUANTIZE. Everything else float means the artifact is not full-integer
(``egeunet_fp32.tflite``, or the mixed ``egeunet_int8.tflite`` with its float islands), and the runtimes refuse it
with a message that names those ops instead of a kernel-registry error or a 12%-on-the-NPU compile.

The analysis reads the flatbuffer itself (the schema module of ai-edge-litert, or of tflite-micro when only that
is installed): no interpreter, so it also works on files no interpreter here can load.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from egeunet_deploy.export.tflite_integer import DTYPES, FLOAT_TYPES
from egeunet_deploy.export.tflite_integer import PREPROCESSING_FLOAT_OPS as PREPROCESSING_OPS

from .base import ArtifactError

# PREPROCESSING_OPS: the op types the contract's preprocessing is made of (export.tflite_integer, the one list). An op
# of these types counts as preprocessing only when everything it reads comes from the graph input through such ops.


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    return schema


@dataclass
class GraphOp:
    index: int
    op: str
    float_tensors: list[str]
    region: str  # "preprocessing", "output" (a DEQUANTIZE/QUANTIZE into the graph output), "network"
    outputs: list[str] = field(default_factory=list)  # output tensor names (how Vela names an op)
    n_inputs: int = 0  # non-optional inputs
    input_dtype: str | None = None  # of the first input


@dataclass
class IntegerReport:
    """The ops of a graph, each placed in the preprocessing, the output conversion or the network."""

    path: str
    ops: list[GraphOp]
    op_types: dict = field(default_factory=dict)

    @property
    def float_network_ops(self) -> list[GraphOp]:
        """Ops past the preprocessing (and not the final output conversion) that read or write a float tensor."""
        return [o for o in self.ops if o.float_tensors and o.region == "network"]

    @property
    def full_integer(self) -> bool:
        return not self.float_network_ops

    def float_op_types(self) -> Counter:
        return Counter(o.op for o in self.float_network_ops)

    def describe_float_ops(self, limit: int = 12) -> str:
        """'GELU 12, CONV_2D 40, ...' (most frequent first), or '' when the graph is full-integer."""
        counts = self.float_op_types().most_common()
        text = ", ".join(f"{name} x{n}" for name, n in counts[:limit])
        return text + (f", and {len(counts) - limit} more op types" if len(counts) > limit else "")

    def preprocessing_ops(self) -> list[str]:
        return [o.op for o in self.ops if o.region == "preprocessing"]

    def concat_inputs(self) -> list[int]:
        """Input count of every CONCATENATION (TFLite Micro takes at most 10)."""
        return [o.n_inputs for o in self.ops if o.op == "CONCATENATION"]

    def uint8_casts(self) -> int:
        """CASTs from uint8 (TFLite Micro's CAST refuses uint8 input)."""
        return sum(1 for o in self.ops if o.op == "CAST" and o.input_dtype == "uint8")


def analyse(source: Path | str | bytes) -> IntegerReport:
    """Read a .tflite file (or its bytes) and classify every op of its main subgraph."""
    schema = _schema()
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), "<bytes>"
    else:
        name = str(source)
        data = Path(source).read_bytes()
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))
        sg = model.subgraphs[0]
    except Exception as e:  # flatbuffers raise anything from struct.error to IndexError on junk
        raise ArtifactError(f"{name}: not a readable TFLite flatbuffer ({type(e).__name__}: {e})") from None
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def is_const(t: int) -> bool:
        b = sg.tensors[t].buffer
        return bool(b) and model.buffers[b].data is not None and len(model.buffers[b].data) > 0

    produced_by_pre = set(int(t) for t in (sg.inputs if sg.inputs is not None else []))
    outputs = set(int(t) for t in (sg.outputs if sg.outputs is not None else []))
    ops = []
    for i, op in enumerate(sg.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), f"BUILTIN_{code.builtinCode}")
        if kind == "CUSTOM" and code.customCode:
            kind = f"CUSTOM({code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode})"
        ins = [int(t) for t in (op.inputs if op.inputs is not None else []) if t >= 0]
        outs = [int(t) for t in (op.outputs if op.outputs is not None else []) if t >= 0]
        def tname(t: int) -> str:
            n = sg.tensors[t].name
            return n.decode() if isinstance(n, bytes) else str(n)

        floats = [tname(t) for t in ins + outs if sg.tensors[t].type in FLOAT_TYPES]
        live = [t for t in ins if not is_const(t)]
        if kind in PREPROCESSING_OPS and live and all(t in produced_by_pre for t in live):
            region = "preprocessing"
            produced_by_pre.update(outs)
        elif kind in ("DEQUANTIZE", "QUANTIZE") and outs and all(t in outputs for t in outs):
            region = "output"
        else:
            region = "network"
        first = DTYPES.get(sg.tensors[ins[0]].type) if ins else None
        ops.append(GraphOp(i, kind, floats, region, [tname(t) for t in outs], len(ins), first))
    return IntegerReport(name, ops, dict(Counter(o.op for o in ops)))


class FloatOpsError(ArtifactError):
    """A runtime or compiler for integer-only hardware refuses a graph with float ops past the preprocessing."""

    def __init__(self, message: str, report: IntegerReport) -> None:
        super().__init__(message)
        self.report = report


def require_full_integer(path: Path | str, who: str, report: IntegerReport | None = None) -> IntegerReport:
    """The graph's report, or :class:`FloatOpsError` naming the float ops (``who`` is the target, for the message)."""
    report = report or analyse(path)
    if not report.full_integer:
        n = len(report.float_network_ops)
        raise FloatOpsError(
            f"{path}: {who} takes full-integer models only, and {n} of its {len(report.ops)} ops past the "
            f"input preprocessing read or write float tensors: {report.describe_float_ops()}. Export the "
            f"full-integer artifact instead (egeunet export --target tflite --precision int8-full)", report)
    return report


def uniquely_named(source: Path | str | bytes) -> bytes:
    """The flatbuffer with every tensor named ``t<index>`` (values, ops and signatures untouched), so a tool that
    reports ops by output tensor name (Vela) can be mapped back to ops: exported artifacts drop the tensor names to
    save space, which leaves hundreds of ops called 'None'."""
    import flatbuffers

    schema = _schema()
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))
    for sg in model.subgraphs:
        for i, t in enumerate(sg.tensors):
            t.name = f"t{i}"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
