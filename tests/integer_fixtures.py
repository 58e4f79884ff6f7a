"""The full-integer TFLite artifact shared by the TFLite Micro and Vela tests (imported by those modules).

Built once per session by the real exporter (``egeunet export --target tflite --precision int8-full``) into its own
folder: conftest's ``exported`` cache finds artifacts by a precision glob, where 'int8' also matches 'int8-full'.
``EGEUNET_TEST_INT8_FULL=path`` uses an artifact ``egeunet export`` already wrote instead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def int8_full(tmp_path_factory) -> Path:
    """``egeunet_int8-full.tflite`` exported from the default weights (two test modules: the file is the cache)."""
    from egeunet_deploy.export import export
    from egeunet_deploy.export.api import TARGETS

    given = os.environ.get("EGEUNET_TEST_INT8_FULL")  # an artifact already exported (saves 1-2 minutes per session)
    if given:
        return Path(given)
    if "int8-full" not in TARGETS["tflite"].precisions:
        pytest.skip("this version has no int8-full TFLite export yet")
    cache = tmp_path_factory.getbasetemp() / "int8_full_shared"
    found = cache / "egeunet_int8-full.tflite"
    if found.is_file():
        return found
    return export("tflite", "int8-full", out_dir=cache)


def tflm_blockers(path: Path) -> list[str]:
    """What in this graph TFLite Micro refuses and ``export.tflm_compat`` fixes (empty: nothing)."""
    from egeunet_deploy.runtimes.integer_graph import analyse

    report = analyse(path)
    out = [f"a {n}-input CONCATENATION" for n in report.concat_inputs() if n > 10]
    if report.uint8_casts():
        out.append("a uint8 -> float CAST")
    return out
