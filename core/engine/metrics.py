"""Classification metrics, CPU latency measurement and the run report."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch


def classification_metrics(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Overall accuracy, mean class accuracy (over classes present), per-class accuracy, confusion.

    ``confusion[i][j]`` counts shapes of true class i predicted as j.
    """
    pred = np.asarray(pred, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(conf, (labels, pred), 1)
    support = conf.sum(1)
    per_class = np.where(support > 0, np.diag(conf) / np.maximum(support, 1), np.nan)
    present = support > 0
    return {
        "oa": float((pred == labels).mean()) if len(labels) else float("nan"),
        "macc": float(np.nanmean(per_class[present])) if present.any() else float("nan"),
        "n": int(len(labels)),
        "per_class_acc": [None if np.isnan(v) else float(v) for v in per_class],
        "confusion": conf.tolist(),
    }


@torch.no_grad()
def measure_latency(model, num_points: int = 1024, batch: int = 1, runs: int = 20, warmup: int = 3) -> float:
    """Median wall time (ms) of one call at ``batch`` on the CPU, after warm-up: ``model`` is a torch
    model (one eager forward pass) or any callable taking (batch, num_points, 3) float32 numpy
    clouds (e.g. ``core.inference.LoadedModel.logits``: the model's inference engine).

    Sampling and grouping are included (computed inside the call).
    """
    x = torch.rand(batch, num_points, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    if isinstance(model, torch.nn.Module):
        run = model.eval()
    else:
        run, x = model, x.numpy()
    with torch.no_grad():
        for _ in range(warmup):
            run(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            run(x)
            times.append((time.perf_counter() - t0) * 1000)
    return float(statistics.median(times))


def report_markdown(r: dict) -> str:
    lines = [
        f"# Report: {r['job']} ({r['model']['name']}, width {r['model']['width']:g})",
        "",
        f"- overall accuracy (final epoch, no voting): **{r['oa'] * 100:.2f}%** on {r['n']} test shapes",
        f"- mean class accuracy: {r['macc'] * 100:.2f}%",
        f"- best epoch OA (selected on the test split, for reference only): {r['best_oa'] * 100:.2f}%",
        f"- parameters: {r['params']:,}; MACs per sample (linear layers, reference convention): {r['macs'] / 1e6:.1f} M;"
        f" sampling/grouping: {r['grouping_distances'] / 1e6:.2f} M distance evaluations",
        f"- CPU latency, batch 1, {r['threads']} threads, eager, median: {r['latency_ms_cpu_b1']:.1f} ms",
        f"- epochs: {r['epochs']}; training time: {r['train_time_s'] / 60:.1f} min; processes: {r['world_size']}",
    ]
    m = r.get("machine")  # absent from reports written before it was recorded
    if m:
        from .machine import format_machine

        lines.append(f"- machine: {format_machine(m)}; torch {m['torch']}, Python {m['python']}")
    lines += [
        "",
        "| class | accuracy |",
        "| --- | --- |",
    ]
    for name, acc in r["per_class_acc"].items():
        lines.append(f"| {name} | {'-' if acc is None else f'{acc * 100:.1f}%'} |")
    return "\n".join(lines) + "\n"
