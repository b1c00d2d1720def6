"""The one way in for models: ``@register_model`` entry points, ``create_model``, ``list_models``."""

from __future__ import annotations

from typing import Callable

from .base import ClassifierBase, ModelConfig
from .fused import FastPaths

_ENTRYPOINTS: dict[str, Callable[..., ClassifierBase]] = {}


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register_model(fn: Callable[..., ClassifierBase]) -> Callable[..., ClassifierBase]:
    """Register a model entry point under its function name."""
    _ENTRYPOINTS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_ENTRYPOINTS)


def create_model(
    name: str,
    num_classes: int = 40,
    width: float = 1.0,
    aug_factors=(1.0,),
    fast_paths: FastPaths | None = None,
    **kwargs,
) -> ClassifierBase:
    """Build a registered model.

    Args:
        name: one of :func:`list_models`.
        num_classes: size of the class layer (never scaled by ``width``).
        width: multiplier of every hidden width (1/8 for T3DNet's tiny model).
        aug_factors: width factors for network augmentation; ``(1.0,)`` gives a plain model, more
            factors give a supernet allocated at the largest one around the tiny model.
        fast_paths: the exact rewrites the model runs (default: all of them, at their tuned
            settings); never changes what it computes.
        **kwargs: the architecture's own options (DGCNN's ``k``, ``dropout``, ...).
    """
    if name not in _ENTRYPOINTS:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}")
    factors = tuple(sorted({float(f) for f in aug_factors} | {1.0}))
    model = _ENTRYPOINTS[name](num_classes=num_classes, width=width, aug_factors=factors, **kwargs)
    model.model_config = ModelConfig(name, num_classes, float(width), factors, dict(kwargs),
                                     fast_paths if fast_paths is not None else FastPaths())
    return model


def model_from_config(cfg: ModelConfig | dict) -> ClassifierBase:
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    return create_model(cfg.name, cfg.num_classes, cfg.width, cfg.aug_factors, cfg.fast_paths, **dict(cfg.kwargs))
