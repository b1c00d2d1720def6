"""Train the up-axis estimator: a small PointNet++ that tells which of six signed axes of a cloud is up.

Each training shape (ModelNet40 train split, z up) is turned about z by a random angle, then so that a
random signed axis points up; the model learns that axis (six classes, ``core.data.orient.UP_AXES``).
A fixed tenth of the training split is held out for validation; the test split is never used here.
The final model is written as a self-describing checkpoint (float16) whose class names are the axes.

    python scripts/train_up_estimator.py --data ../shared/data/modelnet40_npy1024 \
        --out assets/models/up_estimator.pt --epochs 10
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as main.py: spinning threads crawl on a shared CPU
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data.datasets import load_split  # noqa: E402
from core.data.orient import UP_AXES, rotation_to_z  # noqa: E402
from core.engine.checkpoint import atomic_save, model_state  # noqa: E402
from core.engine.grouping import GroupingCache  # noqa: E402
from core.models import create_model  # noqa: E402

# rotation turning a z-up cloud so that axis k points up: x -> R_k^T x
_TURNS = np.stack([rotation_to_z(a) for a in UP_AXES])


def turned_batch(points: np.ndarray, rng: np.random.Generator, jitter: float = 0.005
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Random yaw and small jitter, then a random signed axis turned up; labels are the axes.

    Only rotations and a jitter much smaller than the ball-query radii: the sampling and grouping
    indices of the clean shape stay valid (``GroupingCache``)."""
    b = len(points)
    yaw = rng.uniform(0, 2 * np.pi, b)
    c, s = np.cos(yaw), np.sin(yaw)
    rz = np.zeros((b, 3, 3))
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c, -s, s, c, 1
    labels = rng.integers(0, len(UP_AXES), b)
    rot = np.einsum("bji,bjk->bik", _TURNS[labels], rz)  # R_k^T @ Rz
    x = np.einsum("bij,bnj->bni", rot, points)
    x += rng.normal(0, jitter, x.shape)
    x /= np.linalg.norm(x, axis=2).max(axis=1)[:, None, None]
    return x.astype(np.float32), labels


@torch.no_grad()
def accuracy(model, points: np.ndarray, seed: int, batch: int = 128) -> float:
    model.eval()
    rng = np.random.default_rng(seed)
    hits = 0
    for lo in range(0, len(points), batch):
        x, y = turned_batch(points[lo:lo + batch], rng, jitter=0.0)
        hits += int((model(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
    return hits / len(points)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="pointnet2_ssg")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16", help="bf16: autocast on the CPU")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    ds = load_split(args.data, "train", 1024)
    order = np.random.default_rng(12345).permutation(len(ds))
    n_val = len(ds) // 10
    val, train = ds.points[order[:n_val]], ds.points[order[n_val:]]

    model = create_model(args.model, num_classes=len(UP_AXES), width=args.width)
    groups = GroupingCache(model, np.ascontiguousarray(train), variants=4, seed=args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * math.ceil(len(train) / args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.1)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0, total, seen = time.time(), 0.0, 0
        perm = rng.permutation(len(train))
        for lo in range(0, len(perm), args.batch_size):
            idx = perm[lo:lo + args.batch_size]
            x, y = turned_batch(train[idx], rng)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                logits = model(torch.from_numpy(x), groups.get(idx, epoch))
            loss = loss_fn(logits.float(), torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(y)
            seen += len(y)
        val_acc = accuracy(model, val, seed=epoch)
        history.append({"epoch": epoch, "loss": total / seen, "val_acc": val_acc})
        print(f"epoch {epoch}: loss {total / seen:.4f}, validation {val_acc:.4f}, "
              f"{seen / (time.time() - t0):.0f} shapes/s", flush=True)
        ck = model_state(model, list(UP_AXES), metrics={"val_acc": val_acc, "epoch": epoch},
                         config={"task": "up_axis", "held_out": f"{n_val} training shapes (fixed permutation)",
                                 **{k: v for k, v in vars(args).items() if k not in ("data", "out")}},
                         half=True)
        atomic_save(ck, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
