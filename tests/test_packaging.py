"""``pip install .`` (a real wheel, not the editable install the suite runs from) ships one namespace that works.

The wheel is built from a copy of the package folders (the build writes ``build/`` and ``*.egg-info`` next to the
sources), installed with ``pip install --target``, and the installed copy runs ``egeunet``: its shipped weights and
bundled sample must come from inside the installed package, not from this checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PACKAGE_DIRS = ("cli", "model", "export", "calibration", "runtimes")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(wheel, site folder the wheel was installed into)."""
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src)
    for name in PACKAGE_DIRS:
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(root / "dist")],
                   check=True, capture_output=True, text=True)
    (wheel,) = (root / "dist").glob("egeunet_deploy-*.whl")
    site = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, text=True)
    return wheel, site


def test_wheel_holds_one_namespace_with_weights_sample_and_licence(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"egeunet_deploy"}  # no top-level `model`, `export`
    for needed in ("egeunet_deploy/model/assets/egeunet_isic2017.pt", "egeunet_deploy/model/assets/MODEL_CARD.md",
                   "egeunet_deploy/model/assets/sample/provenance.csv", "egeunet_deploy/runtimes/tolerances.yaml",
                   "egeunet_deploy/main.py", "egeunet_deploy/export/__init__.py"):
        assert needed in names, needed
    sample = REPO / "model" / "assets" / "sample"
    for split in ("train", "test"):
        for kind in ("images", "masks"):
            want = len(list((sample / split / kind).iterdir()))
            got = sum(n.startswith(f"egeunet_deploy/model/assets/sample/{split}/{kind}/") for n in names)
            assert got == want, (split, kind, got, want)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "egeunet = egeunet_deploy.main:main" in entry_points


def test_installed_copy_runs_from_its_own_files(installed, tmp_path):
    _, site = installed
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable install in site-packages
    run = [sys.executable, "-m", "egeunet_deploy"]
    info = subprocess.run([*run, "info", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    weights = Path(json.loads(info.stdout)["weights"])
    assert weights.is_relative_to(site.resolve()) and json.loads(info.stdout)["params"] == 53_374
    sample = site / "egeunet_deploy" / "model" / "assets" / "sample"
    result = subprocess.run([*run, "evaluate", "--data", str(sample), "--split", "test", "--json",
                             str(tmp_path / "r.json")], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["n_images"] == 32
