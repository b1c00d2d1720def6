"""Teacher vs student inference: load checkpoints, run both on one cloud, compare.

Thread: any; the GUI calls it from a worker thread. Models are in eval mode, FPS starts at
point 0, so a prediction is deterministic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.engine.checkpoint import CheckpointError, load_model
from core.models import ClassifierBase
from core.models.complexity import count_macs, count_parameters

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
DEFAULT_TEACHER = ASSETS / "models" / "teacher.pt"
DEFAULT_STUDENT = ASSETS / "models" / "student.pt"


@dataclass
class LoadedModel:
    """A checkpoint ready for inference, with its size and cost."""

    model: ClassifierBase
    checkpoint: str
    class_names: list[str]
    params: int
    macs: int
    size_bytes: int
    metrics: dict

    @classmethod
    def load(cls, path: str | Path) -> "LoadedModel":
        model, ck = load_model(path)
        model.eval()
        return cls(model, ck["path"], list(ck["class_names"]), count_parameters(model),
                   count_macs(model), Path(ck["path"]).stat().st_size, dict(ck.get("metrics", {})))

    @property
    def name(self) -> str:
        cfg = self.model.model_config
        return f"{cfg.name} x{cfg.width:g}"

    @torch.no_grad()
    def probabilities(self, points: np.ndarray) -> tuple[np.ndarray, float]:
        """Class probabilities for one prepared cloud (P, 3), and the latency in ms."""
        x = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)).unsqueeze(0)
        t0 = time.perf_counter()
        logits = self.model(x)
        ms = (time.perf_counter() - t0) * 1000
        return torch.softmax(logits.float(), 1)[0].numpy(), ms

    def describe(self, probs: np.ndarray, ms: float, top: int) -> dict:
        order = np.argsort(-probs)[:top]
        return {
            "checkpoint": self.checkpoint,
            "model": self.name,
            "params": self.params,
            "macs": self.macs,
            "size_bytes": self.size_bytes,
            "latency_ms": ms,
            "top": [{"class": self.class_names[i], "prob": float(probs[i])} for i in order],
        }


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (nats) between two probability vectors."""
    p = np.clip(p, 1e-12, 1)
    q = np.clip(q, 1e-12, 1)
    m = 0.5 * (p + q)
    return float(0.5 * (p * np.log(p / m)).sum() + 0.5 * (q * np.log(q / m)).sum())


class Comparison:
    """A teacher and a student over the same classes."""

    def __init__(self, teacher: LoadedModel, student: LoadedModel) -> None:
        if teacher.class_names != student.class_names:
            raise CheckpointError(
                f"{student.checkpoint}: its {len(student.class_names)} classes differ from the teacher's "
                f"({len(teacher.class_names)} classes in {teacher.checkpoint})")
        self.teacher, self.student = teacher, student

    @classmethod
    def from_paths(cls, teacher: str | Path | None = None, student: str | Path | None = None) -> "Comparison":
        return cls(LoadedModel.load(teacher or DEFAULT_TEACHER), LoadedModel.load(student or DEFAULT_STUDENT))

    @property
    def class_names(self) -> list[str]:
        return self.teacher.class_names

    def predict_points(self, points: np.ndarray, top: int = 5) -> dict:
        """Both models on one prepared cloud (P, 3): top classes, full probabilities, agreement."""
        pt, mt = self.teacher.probabilities(points)
        ps, ms = self.student.probabilities(points)
        t, s = self.teacher.describe(pt, mt, top), self.student.describe(ps, ms, top)
        t["probs"], s["probs"] = pt.tolist(), ps.tolist()
        return {
            "teacher": t,
            "student": s,
            "agree": int(pt.argmax()) == int(ps.argmax()),
            "divergence": js_divergence(pt, ps),
        }

    def predict_file(self, path: str | Path, top: int = 5, up_axis: str = "z", num_points: int = 1024) -> dict:
        from core.data.io import load_point_cloud
        from core.data.preprocess import prepare_points

        cloud = load_point_cloud(path)
        pts = prepare_points(cloud.xyz, num_points=num_points, up_axis=up_axis)
        result = self.predict_points(pts, top)
        for role in ("teacher", "student"):
            result[role].pop("probs")
        result["file"] = str(path)
        return result


@torch.no_grad()
def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, split: str = "test", limit: int = 0,
                        batch_size: int = 64) -> dict:
    """OA and mean class accuracy (fractions) of a checkpoint on a dataset split."""
    from core.data.datasets import load_split
    from core.engine.metrics import classification_metrics

    model, ck = load_model(checkpoint)
    ds = load_split(data, split, 1024)
    if list(ds.class_names) != list(ck["class_names"]):
        raise CheckpointError(f"{ck['path']}: trained on {len(ck['class_names'])} classes that differ from {data}'s "
                              f"{len(ds.class_names)}")
    idx = np.arange(len(ds)) if not limit or limit >= len(ds) else np.linspace(0, len(ds) - 1, limit).round().astype(int)
    preds = []
    for lo in range(0, len(idx), batch_size):
        b = idx[lo : lo + batch_size]
        preds.append(model(torch.from_numpy(ds.points[b])).argmax(1).numpy())
    m = classification_metrics(np.concatenate(preds), ds.labels[idx], len(ds.class_names))
    m["checkpoint"] = ck["path"]
    m["split"] = split
    return m
