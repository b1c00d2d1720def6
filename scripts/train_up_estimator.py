"""Train the up-axis estimator: which of the six signed axes of a cloud points up.

The estimator scores each candidate axis by a small probe on a classifier's embedding of the cloud
turned with that axis up (``core.inference.UpEstimator``): a model trained on upright shapes embeds an
upright shape differently from a turned one. The probe (one hidden layer by default, or linear) is
fitted on ModelNet40 training shapes, each turned so that a random signed axis points up (half of them
turned about z by a random angle first, so that scans at any heading count too); a fixed tenth of the
training split is held out to measure it and to choose the margin by which another axis must beat z.
The test split is never used here.

    python scripts/train_up_estimator.py --data ../shared/data/modelnet40_npy1024 \
        --model assets/models/teacher.pt --features RUN/up_features.npz --out assets/models/up_estimator.pt
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as main.py: spinning threads crawl on a shared CPU
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data.datasets import load_split
from core.data.orient import UP_AXES, turn_z_up_to
from core.engine.checkpoint import atomic_save, load_model, read_checkpoint
from core.inference import (PROBE_KEY, candidate_views, embedding_module, pick_axes, probe_log_probabilities,
                            six_view_features)
from core.runtime import model_fingerprint

MARGINS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
#: Probabilities of the chosen axis below which an estimate would be called unsure (measured at the chosen margin).
UNSURE_LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
#: Part of the feature cache's key: raise it when what the features are made of changes.
FEATURES_VERSION = 1


def held_out_split(shapes: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training split's fixed held-out tenth (never trained on) and of the rest."""
    order = np.random.default_rng(12345).permutation(shapes)
    return order[:shapes // 10], order[shapes // 10:]


def turned_files(points: np.ndarray, rng: np.random.Generator, yaw: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Each z-up shape turned about z (``yaw``: ``none``; ``axis``, a multiple of 90 degrees; ``any``;
    ``mixed``: none for the first half, any for the rest), then so that a random signed axis is up (its label)."""
    out = np.empty_like(points)
    labels = rng.integers(0, len(UP_AXES), len(points))
    for i, (p, k) in enumerate(zip(points, labels)):
        how = ("none" if i < len(points) // 2 else "any") if yaw == "mixed" else yaw
        angle = {"none": 0.0, "axis": rng.integers(4) * np.pi / 2, "any": rng.uniform(0, 2 * np.pi)}[how]
        rz = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        out[i] = turn_z_up_to(p @ rz.T, UP_AXES[k])
    return out, labels


def view_features(model, files: np.ndarray, batch: int = 16, label: str = "") -> np.ndarray:
    """(N, 6, C) embeddings of each file turned with each candidate axis up."""
    feats, t0, module = [], time.time(), embedding_module(model)
    for lo in range(0, len(files), batch):
        views = np.stack([candidate_views(f) for f in files[lo:lo + batch]])
        feats.append(six_view_features(model, views, module))
        if lo // batch % 50 == 0:
            print(f"{label} {lo + len(feats[-1])}/{len(files)} shapes, {time.time() - t0:.0f} s", flush=True)
    return np.concatenate(feats)


def fit_probe(feats: np.ndarray, labels: np.ndarray, hidden: int = 0, weight_decay: float = 1e-2,
              seed: int = 0) -> dict:
    """A score per view, softmax over the six views, cross-entropy with the true one.

    Features are standardised first. ``hidden`` 0: a linear score (full-batch Adam); otherwise one
    hidden ReLU layer of that width, with dropout on its input and output (AdamW, mini-batches).
    Returns the probe as :func:`core.inference.probe_scores` reads it.
    """
    torch.manual_seed(seed)
    mean = feats.reshape(-1, feats.shape[-1]).mean(0)
    scale = feats.reshape(-1, feats.shape[-1]).std(0) + 1e-6
    x = torch.from_numpy(((feats - mean) / scale).astype(np.float32))
    y = torch.from_numpy(labels)
    probe = {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32)}
    if not hidden:
        w = torch.zeros(x.shape[-1], requires_grad=True)
        opt = torch.optim.Adam([w], lr=0.05, weight_decay=weight_decay)
        for _ in range(300):
            loss = torch.nn.functional.cross_entropy(x @ w, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {**probe, "weight": w.detach().numpy()}
    layer, out = torch.nn.Linear(x.shape[-1], hidden), torch.nn.Linear(hidden, 1, bias=False)
    net = torch.nn.Sequential(torch.nn.Dropout(0.2), layer, torch.nn.ReLU(), torch.nn.Dropout(0.3), out)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=weight_decay)
    for _ in range(60):
        for i in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(net(x[i]).squeeze(-1), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {**probe, "hidden_weight": layer.weight.detach().T.numpy().copy(),
            "hidden_bias": layer.bias.detach().numpy().copy(), "weight": out.weight.detach()[0].numpy().copy()}


def margin_rows(lp: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Per margin: the share of z-up files kept z up, and of files with each axis up brought back
    (axes no file has are left out)."""
    rows = []
    for m in MARGINS:
        best = pick_axes(lp, m)
        per_axis = {a: float((best[labels == k] == k).mean()) for k, a in enumerate(UP_AXES) if (labels == k).any()}
        rows.append({"margin": m, "all_six": float((best == labels).mean()), **per_axis})
    return rows


def unsure_rows(lp: np.ndarray, labels: np.ndarray, margin: float) -> list[dict]:
    """Per level of :data:`UNSURE_LEVELS`: at ``margin``, the share of files whose chosen axis has a
    probability below it (unsure), the share of those that are wrong, the share of the others (sure)
    that are wrong, and the share of z-up files called unsure."""
    best = pick_axes(lp, margin)
    prob, right = np.exp(lp[np.arange(len(lp)), best]), best == labels
    rows = []
    for level in UNSURE_LEVELS:
        unsure = prob < level
        rows.append({"below": level, "unsure": float(unsure.mean()),
                     "wrong_if_unsure": float((~right[unsure]).mean()) if unsure.any() else 0.0,
                     "wrong_if_sure": float((~right[~unsure]).mean()) if (~unsure).any() else 0.0,
                     "z_unsure": float(unsure[labels == 0].mean()) if (labels == 0).any() else 0.0})
    return rows


def features(args, model) -> dict:
    """Training and held-out features, read from ``--features`` when it holds the ones of these
    settings and this model's weights, else computed (and saved there)."""
    settings = (f"v{FEATURES_VERSION} weights={model_fingerprint(model)} data={Path(args.data).resolve()} "
                f"shapes={args.shapes} seed={args.seed} yaw={args.yaw}")
    if args.features and Path(args.features).is_file():
        cached = np.load(args.features)
        if str(cached["settings"]) == settings:
            print(f"features read from {args.features}", flush=True)
            return {k: cached[k] for k in cached.files}
    rng = np.random.default_rng(args.seed)
    ds = load_split(args.data, "train", 1024)
    val_idx, train_idx = held_out_split(len(ds))
    n_val = len(val_idx)
    train_idx = train_idx[:args.shapes] if args.shapes else train_idx
    t0 = time.time()
    train_files, train_labels = turned_files(ds.points[train_idx], rng, args.yaw)
    val_files, val_labels = turned_files(ds.points[val_idx], rng, "none")
    yaw_files, yaw_labels = turned_files(ds.points[val_idx], rng, "any")
    out = {"settings": np.array(settings),
           "train": view_features(model, train_files, label="training"), "train_labels": train_labels,
           "val": view_features(model, val_files, label="held out"), "val_labels": val_labels,
           "val_yaw": view_features(model, yaw_files, label="held out, any heading"), "val_yaw_labels": yaw_labels}
    print(f"features: {len(train_idx)} + 2 x {n_val} shapes x 6 views in {time.time() - t0:.0f} s", flush=True)
    if args.features:
        Path(args.features).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.features).with_suffix(".tmp.npz")
        np.savez(tmp, **out)
        os.replace(tmp, args.features)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "assets" / "models" / "teacher.pt"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--features", help="an .npz to keep the features in (and to read them from next time)")
    ap.add_argument("--shapes", type=int, default=0, help="training shapes for the probe (0: all but the held-out tenth)")
    ap.add_argument("--hidden", type=int, default=256, help="the probe's hidden width (0: linear)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--yaw", choices=["none", "axis", "any", "mixed"], default="mixed",
                    help="turn training shapes about z before turning an axis up: none (the dataset's "
                         "alignment), axis (multiples of 90 degrees), any, or mixed (half none, half any)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-z-loss", type=float, default=0.005,
                    help="the margin is the smallest one keeping at least 1 - this of z-up files z up")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model)
    f = features(args, model)
    probe = fit_probe(f["train"], f["train_labels"], args.hidden, seed=args.seed)
    train_acc = float((probe_log_probabilities(f["train"], probe).argmax(1) == f["train_labels"]).mean())
    lp_val = probe_log_probabilities(f["val"], probe)
    rows = margin_rows(lp_val, f["val_labels"])
    yaw_rows = margin_rows(probe_log_probabilities(f["val_yaw"], probe), f["val_yaw_labels"])
    for r, ry in zip(rows, yaw_rows):
        print(f"margin {r['margin']:.1f}: all six {r['all_six']:.4f}, "
              + ", ".join(f"{a} {r[a]:.3f}" for a in UP_AXES if a in r)
              + f"; any heading: all six {ry['all_six']:.4f}, z {ry.get('z', float('nan')):.3f}")
    ok = [r for r in rows if r.get("z", 1.0) >= 1 - args.max_z_loss]
    margin = (ok[0] if ok else rows[-1])["margin"]
    unsure = unsure_rows(lp_val, f["val_labels"], margin)
    for r in unsure:
        print(f"unsure below {r['below']}: {r['unsure']:.3f} of files, wrong {r['wrong_if_unsure']:.3f} of them; "
              f"sure ones wrong {r['wrong_if_sure']:.4f}; z-up files unsure {r['z_unsure']:.3f}")
    ck = read_checkpoint(args.model)
    ck.pop("path")
    ck[PROBE_KEY] = {
        **{k: torch.from_numpy(v) for k, v in probe.items()},
        "margin": float(margin), "axes": list(UP_AXES), "yaw": args.yaw, "hidden": args.hidden,
        "train_shapes": len(f["train_labels"]), "train_acc": train_acc,
        "validation": {"shapes": len(f["val_labels"]), "held_out": "a fixed tenth of the training split",
                       "margin_rule": f"the smallest margin keeping at least {1 - args.max_z_loss:.1%} of z-up files z up",
                       "rows": rows, "any_heading_rows": yaw_rows, "unsure_rows": unsure},
        "command": "python scripts/train_up_estimator.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    atomic_save(ck, args.out)
    print(f"probe: train {train_acc:.4f}; margin {margin} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
