"""Export EGE-UNet to ONNX, TFLite (LiteRT) and Core ML, with the preprocessing baked in and metadata inside.

- :mod:`.api`: the format table (:data:`TARGETS`), :func:`export` (one artifact) and :func:`export_all`;
- :mod:`.wrappers`: the torch modules every converter sees (uint8 image -> contract min-max -> network -> prob);
- :mod:`.rewrite`: the equivalent export graph ONNX and TFLite convert (layout-native, norms fused, named blocks);
- :mod:`.onnx`, :mod:`.tflite`, :mod:`.coreml`: one module per target, each ``export_<target>(...)``;
- :mod:`.metadata`: the one metadata record, its writers/readers per format and ``manifest.json``.

The converters are imported only when a target is exported, so importing this package is cheap.
"""

from .api import (
    PRECISIONS,
    TARGETS,
    ExportError,
    ExportResult,
    ExportUnavailable,
    Target,
    export,
    export_all,
    export_formats,
    format_table,
)

__all__ = ["PRECISIONS", "TARGETS", "ExportError", "ExportResult", "ExportUnavailable", "Target", "export",
           "export_all", "export_formats", "format_table"]
