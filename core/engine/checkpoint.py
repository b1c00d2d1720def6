"""Self-describing checkpoints: architecture, widths, class names, weights, metrics, version.

Loaded with ``torch.load(weights_only=True)``: a checkpoint never executes code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from core import __version__
from core.models import ClassifierBase, ModelConfig, model_from_config

FORMAT = "t3dnet-studio/checkpoint"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def model_state(model: ClassifierBase, class_names, metrics=None, config=None, half: bool = False) -> dict:
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    return {
        "format": FORMAT,
        "format_version": 1,
        "project_version": __version__,
        "model": model.model_config.to_dict(),
        "class_names": list(class_names),
        "state_dict": sd,
        "dtype": "float16" if half else "float32",
        "metrics": dict(metrics or {}),
        "config": dict(config or {}),
    }


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_model(path, model, class_names, metrics=None, config=None, half=False) -> None:
    atomic_save(model_state(model, class_names, metrics, config, half), path)


#: The checkpoints a run folder exposes, in the order one is chosen as the run's model: the final
#: model (``student.pt`` of a compression job, ``model.pt`` of a trained teacher), else the latest
#: training state of an unfinished run. ``best.pt`` (the epoch with the best test-split accuracy)
#: is never a default: it was selected on the split it would be evaluated on.
RUN_CHECKPOINTS = ("student.pt", "model.pt", "last.pt")
#: The test-selected checkpoint, kept for reference; opened only when named explicitly.
TEST_SELECTED = "best.pt"


def run_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint that stands for the run in ``run_dir`` (see :data:`RUN_CHECKPOINTS`), or None."""
    for name in RUN_CHECKPOINTS:
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint file, or a run folder's checkpoint (:func:`run_checkpoint`), read safely."""
    path = Path(path)
    if path.is_dir():
        found = run_checkpoint(path)
        if found is None:
            raise CheckpointError(f"{path}: no checkpoint ({', '.join(RUN_CHECKPOINTS)}) in this folder")
        path = found
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a T3DNet Studio checkpoint (no model description inside)")
    ckpt["path"] = str(path)
    return ckpt


def load_model(path: str | Path, expect_model: str | None = None) -> tuple[ClassifierBase, dict]:
    """Rebuild the model a checkpoint describes and load its weights (as float32)."""
    ckpt = read_checkpoint(path)
    cfg = ModelConfig.from_dict(ckpt["model"])
    if expect_model and cfg.name != expect_model:
        raise CheckpointError(f"{ckpt['path']}: holds a {cfg.name} model, expected {expect_model}")
    model = model_from_config(cfg)
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{ckpt['path']}: weights do not fit {cfg.name} at width {cfg.width} ({first})") from exc
    if len(ckpt["class_names"]) != cfg.num_classes:
        raise CheckpointError(f"{ckpt['path']}: {len(ckpt['class_names'])} class names for {cfg.num_classes} outputs")
    model.eval()
    return model, ckpt
