"""Export EGE-UNet to ONNX, TFLite (LiteRT) and Core ML, with the preprocessing baked in and metadata inside.

- :mod:`.targets`: the format table (:data:`TARGETS`, one row per target) and :class:`Precision`;
- :mod:`.exporter`: the exporter interface (:class:`ExportJob`) and the steps every exporter shares;
- :mod:`.api`: :func:`export` (one artifact) and :func:`export_all`;
- :mod:`.wrappers`: the torch modules every converter sees (uint8 image -> contract min-max -> network -> prob);
- :mod:`.rewrite`: the equivalent export graph ONNX and TFLite convert (layout-native, norms fused, named blocks);
- :mod:`.onnx`, :mod:`.tflite`, :mod:`.coreml`, :mod:`.executorch`: one module per target, ``export_<target>(job)``;
- :mod:`.metadata`: the one metadata record, its writers/readers per format and ``manifest.json``.

The converters are imported only when a target is exported, and the names below only when first used, so importing
this package (or its table, :mod:`.targets`) is cheap.
"""

_WHERE = {"ExportResult": "api", "export": "api", "export_all": "api", "export_formats": "api",
          "format_table": "api", "ExportError": "exporter", "ExportJob": "exporter", "ExportUnavailable": "exporter",
          "PRECISIONS": "targets", "TARGETS": "targets", "Precision": "targets", "Target": "targets"}
"""Public names and their modules, imported on first use (PEP 562): the CLI reads :mod:`.targets` to build its help
without importing torch through :mod:`.api`."""


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)


__all__ = sorted(_WHERE)
