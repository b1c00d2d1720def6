"""``models``: every registered model with parameters and MACs at width 1 and 1/8."""

from __future__ import annotations

import json


def add_commands(sub) -> None:
    p = sub.add_parser("models", help="list registered models with parameters and MACs",
                       description="List every registered model with parameters and MACs per sample "
                       "(1024 points) at width 1 and at width 1/8.\n\nexample: python main.py models --json")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--points", type=int, default=1024, help="points per sample for MACs (default 1024)")
    p.set_defaults(func=run)


def model_table(points: int = 1024) -> list[dict]:
    from core.models import create_model, list_models
    from core.models.complexity import count_macs, count_parameters, grouping_cost

    rows = []
    for name in list_models():
        full, tiny = create_model(name), create_model(name, width=1 / 8)
        rows.append({
            "name": name,
            "params": count_parameters(full),
            "params_tiny": count_parameters(tiny),
            "macs": count_macs(full, points),
            "macs_tiny": count_macs(tiny, points),
            "grouping_distances": grouping_cost(full, points),
            "reduction": round(count_parameters(full) / count_parameters(tiny), 1),
        })
    return rows


def run(args) -> int:
    rows = model_table(args.points)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'model':<15}{'params':>12}{'params 1/8':>12}{'MACs':>10}{'MACs 1/8':>10}{'ratio':>8}")
    for r in rows:
        print(f"{r['name']:<15}{r['params']:>12,}{r['params_tiny']:>12,}{r['macs'] / 1e9:>9.2f}G"
              f"{r['macs_tiny'] / 1e6:>9.1f}M{r['reduction']:>7.1f}x")
    print(f"MACs: linear layers per sample at {args.points} points, reference convention; "
          "sampling/grouping not included.")
    return 0
