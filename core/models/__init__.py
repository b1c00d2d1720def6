"""Model zoo. Every entry point is registered here, explicitly."""

from .base import ClassifierBase, ModelConfig, reestimate_bn
from .dgcnn import dgcnn
from .fused import FastPaths
from .pointnet import pointnet
from .pointnet2 import pointnet2_msg, pointnet2_ssg
from .registry import UnknownModelError, create_model, list_models, model_from_config, register_model

for _fn in (pointnet, pointnet2_ssg, pointnet2_msg, dgcnn):
    register_model(_fn)

__all__ = [
    "ClassifierBase",
    "FastPaths",
    "ModelConfig",
    "UnknownModelError",
    "create_model",
    "list_models",
    "model_from_config",
    "reestimate_bn",
    "register_model",
]
