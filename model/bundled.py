"""What ships inside the package: the trained weights and a small real sample of ISIC 2017 (see assets/*.md)."""

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
DEFAULT_WEIGHTS = ASSETS / "egeunet_isic2017.pt"
QAT_WEIGHTS = ASSETS / "egeunet_isic2017_int8full.pt"  # quantization-aware fine-tune for the int8-full artifact
MODEL_CARD = ASSETS / "MODEL_CARD.md"
SAMPLE_DATA = ASSETS / "sample"  # official layout: train/ (calibration fallback) and test/ (demo, drift)
