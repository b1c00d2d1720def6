"""Copy one sample shape per ModelNet40 class (the first of its test split) into assets/samples/.

    python scripts/make_samples.py [--data ../shared/data/modelnet40_npy1024] [--out assets/samples]

Writes ``<class>.npy`` (float32 (1024, 3), z up, unit sphere, as in the source) and ``index.json``
listing class and source shape id, so the app and ``predict`` have something to open out of the box.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_samples(data: Path, out: Path) -> list[dict]:
    classes = sorted(p.name for p in data.iterdir() if (p / "test").is_dir())
    if not classes:
        raise SystemExit(f"error: {data}: no <class>/test folders (expected modelnet40_npy1024)")
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for c in classes:
        first = sorted((data / c / "test").glob("*.npy"))[0]
        shutil.copyfile(first, out / f"{c}.npy")
        index.append({"class": c, "file": f"{c}.npy", "source": f"{c}/test/{first.name}", "shape_id": first.stem})
    (out / "index.json").write_text(json.dumps({
        "dataset": "ModelNet40 (modelnet40_npy1024, test split): Princeton ModelNet terms, academic research use",
        "format": "float32 (1024, 3), z up, unit sphere",
        "samples": index,
    }, indent=1) + "\n")
    return index


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "modelnet40_npy1024")
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "samples")
    args = ap.parse_args(argv)
    index = make_samples(args.data, args.out)
    print(f"{len(index)} samples written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
