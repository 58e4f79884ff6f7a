"""The PyTorch reference: the trained network itself, exactly as ``model.evaluate`` runs it.

Every drift figure is "artifact minus this". The input goes through ``model.contract.to_model_input`` (the one
definition of the preprocessing) and the output is ``DeployEGEUNet`` = ``sigmoid(forward_logits(x)[1])`` with the
input-independent GHPA gates computed once (bit-identical to ``model.evaluate.predict_probs`` here); on CUDA the
same code runs on the GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from egeunet_deploy.model.contract import INPUT_HW, to_model_input
from egeunet_deploy.model.ege_unet import DeployEGEUNet

from .base import Runner, RuntimeUnavailable, register_runner


def cuda_status() -> tuple[bool, str]:
    if torch.cuda.is_available():
        return True, f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
    return False, f"torch.cuda.is_available() is False (torch {torch.__version__}, {build})"


@register_runner
class TorchRunner(Runner):
    backend = "torch"
    module = "torch"
    distribution = "torch"
    weights_suffixes = (".pt", ".pth")
    session_attrs = ("net",)

    @classmethod
    def accelerators(cls) -> dict[str, tuple[bool, str]]:
        return {"cuda": cuda_status()}

    def _load(self, path: Path) -> None:
        from egeunet_deploy.model.checkpoint import load_model

        ok, why = cuda_status()
        if self.device in ("cuda", "gpu") and not ok:
            raise RuntimeUnavailable(f"torch: CUDA requested but absent: {why}")
        self._dev = torch.device("cuda" if ok and self.device in ("auto", "cuda", "gpu") else "cpu")
        net, ckpt = load_model(path)
        # Gates folded once (equal outputs, ~1.8x faster on CPU: the drift reference over 589 images is the
        # longest single step of a drift run); other input sizes fall back to computing them.
        self.net = DeployEGEUNet(net, input_hw=INPUT_HW).to(self._dev).eval()
        self.weights_sha256 = ckpt["sha256"]
        self._info = {"device": self._dev.type, "provider": "cuda" if self._dev.type == "cuda" else "cpu (aten)",
                      "artifact": str(path), "weights_sha256": ckpt["sha256"], "format": "pytorch",
                      "precision": "fp32", "gates": "folded (DeployEGEUNet)"}
        if self._dev.type == "cuda":
            self._info["gpu"] = why

    @torch.inference_mode()
    def _run_batch(self, images: np.ndarray) -> np.ndarray:
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        if not images.flags.writeable:  # e.g. np.asarray(PIL image); torch warns on read-only buffers
            images = images.copy()
        x = to_model_input(images).to(self._dev).contiguous(memory_format=torch.channels_last)
        prob = self.net(x)[:, 0]
        if self._dev.type == "cuda":
            torch.cuda.synchronize()
        return prob.float().cpu().numpy()

    def _infer(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - _run_batch is overridden
        raise NotImplementedError

    def info(self) -> dict:
        d = super().info()
        d["threads"] = self.threads or torch.get_num_threads()
        return d
