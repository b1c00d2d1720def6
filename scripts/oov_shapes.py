"""Write the generated out-of-vocabulary objects (``core.data.oov``) as ``.npy`` files (1024 points,
z up, unit sphere), to look at them or to try them on a model: ``python scripts/oov_shapes.py --out DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data.oov import oov_shapes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-family", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    shapes, names = oov_shapes(args.per_family, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, (s, n) in enumerate(zip(shapes, names)):
        np.save(out / f"{n}_{i:03d}.npy", s)
    print(f"{len(shapes)} shapes in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
