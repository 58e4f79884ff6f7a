"""EGE-UNet model, its preprocessing contract, ISIC data loading, metrics, training and evaluation."""

from .ege_unet import DS_WEIGHTS, DeployEGEUNet, EGEUNet, ModelCfg, create_model, list_models

__all__ = ["DS_WEIGHTS", "DeployEGEUNet", "EGEUNet", "ModelCfg", "create_model", "list_models"]
