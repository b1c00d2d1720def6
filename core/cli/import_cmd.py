"""``import-teacher``: a classifier trained with the common PyTorch PointNet / PointNet++ / DGCNN
code, converted into a checkpoint of ours (core.models.importers)."""

from __future__ import annotations

import argparse

DESCRIPTION = """Import a teacher trained elsewhere: a checkpoint of yanx27/Pointnet_Pointnet2_pytorch
(pointnet2_cls_ssg, pointnet2_cls_msg, pointnet_cls: best_model.pth) or of WangYueFTD/dgcnn (DGCNN:
model.t7, DataParallel prefixes welcome), recognised from its key names and shapes. Every tensor is
mapped exactly onto our model of the same architecture, or nothing is written and the reason is
printed (exit status 2). The result is an ordinary checkpoint: use it as --teacher.

examples:
  python main.py import-teacher log/classification/pointnet2_ssg_wo_normals/checkpoints/best_model.pth --out teacher_ssg.pt
  python main.py import-teacher checkpoints/dgcnn_1024/models/model.t7 --out teacher_dgcnn.pt
  python main.py import-teacher best_model.pth --model pointnet2_msg --classes shape_names.txt --out teacher.pt
  python main.py compress --teacher teacher_ssg.pt --data ../shared/data/modelnet40_npy1024 --preset cpu --out runs/t3dnet
"""


def add_commands(sub) -> None:
    p = sub.add_parser("import-teacher", help="convert a PointNet / PointNet++ / DGCNN checkpoint trained elsewhere",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the original's checkpoint file")
    p.add_argument("--out", required=True, help="checkpoint of ours to write (e.g. teacher.pt)")
    # No choices= here: listing them would import torch whenever the parser is built.
    p.add_argument("--model", default=None, metavar="NAME",
                   help="our architecture to map onto: pointnet2_ssg, pointnet2_msg, pointnet or dgcnn "
                   "(default: recognised from the key names)")
    p.add_argument("--classes", default=None, metavar="NAMES.txt",
                   help="class names, one per line in label order (default: ModelNet40's 40 names)")
    p.add_argument("--k", type=int, default=None,
                   help="DGCNN only: neighbours per point the model was trained with (not stored; default 20)")
    p.set_defaults(func=run)


def run(args) -> int:
    from core.models.importers import import_teacher, write_teacher

    result = import_teacher(args.checkpoint, model=args.model, classes=args.classes, k=args.k)
    out = write_teacher(result, args.out, source=args.checkpoint)
    print(f"recognised: {result.summary()}")
    info = result.source_info
    stored = ", ".join(f"{k} {info[k]:.4g}" if isinstance(info[k], float) else f"{k} {info[k]}"
                       for k in ("epoch", "instance_acc", "class_acc") if k in info)
    if stored:
        print(f"stored with it: {stored} (the original's own test)")
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {out}")
    return 0
