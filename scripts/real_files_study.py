"""Measure what the real-files features promise, and write docs/REAL_FILES.md.

    python scripts/real_files_study.py --data ../shared/data/modelnet40_npy1024 \
        --scans ../shared/data/scans --out docs/REAL_FILES.md

1. The up-axis estimate: ModelNet40 test shapes turned so that each of the six signed axes points
   up, and how often the default (``--up auto``) brings z back up; the accuracy cost of the default
   on the z-up test files against ``--up z``.
2. Scenes: how often single objects are called scenes (ModelNet40 test shapes made as dense as a
   scan, real meshes), and composed scenes (shapes standing on a floor) with their object counts.
3. The in-vocabulary decision of each bundled model: the scores' separation of generated
   out-of-vocabulary objects (``core.data.oov``) from the calibration slice (the exposure score's
   also with each family held out of its training), the share of the test split flagged, and the
   share of generated and real out-of-vocabulary objects flagged.
4. Timing: a scan of about 120k points to its objects with both models' predictions.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.data.datasets import load_split
from core.data.io import load_point_cloud
from core.data.oov import oov_shapes
from core.data.partial import partial_view
from core.data.orient import UP_AXES, UP_UNSURE_BELOW, UpAxis, convert_up_axis, turn_z_up_to
from core.data.preprocess import prepare_points
from core.data.scene import check_scene, find_objects
from core.engine.machine import machine_line
from core.inference import Comparison, LoadedModel, probe_log_probabilities
from core.vocabulary import (EXPOSURE_PER_FAMILY, EXPOSURE_SHAPES, auroc, calibration_clouds, calibration_indices,
                             exposure_indices, exposure_inside, fit_exposure, fit_threshold, model_logits,
                             resample_half, vocabulary_score)
from train_up_estimator import held_out_split, turned_files, unsure_rows, view_features

REAL_OOV = [("cow.obj", "y"), ("teapot.obj", "y"), ("bun_zipper.ply", "y"), ("knot.ply", "z")]


def dense(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 1024-point shape as dense as a scan: four jittered copies of each point."""
    return np.repeat(points, 4, axis=0) + rng.normal(0, 0.004, (len(points) * 4, 3))


def axis_study(comp: Comparison, train, test, limit: int) -> list[str]:
    est = comp.up_estimator
    idx = calibration_indices(len(test), limit) if limit else np.arange(len(test))
    pts = test.points[idx]
    lines = ["## 1. The up axis", "",
             f"ModelNet40 test shapes ({len(idx)} of {len(test)}), each turned so that one signed axis points "
             "up; the share for which the default (`--up auto`: no format hint on `.npy`, so the estimate) "
             "brings z back up, the share it reports as unsure (`up_axis_unsure`: the chosen axis's "
             f"probability below {UP_UNSURE_BELOW:g}) and the share it gets wrong without saying so. Estimator: "
             "`assets/models/up_estimator.pt` "
             f"({'margin ' + format(est.margin, 'g') if est else 'absent: the classifiers-energy fallback'}).", "",
             "| axis turned up | z restored | unsure | wrong, not flagged unsure |", "| --- | --- | --- | --- |"]
    chosen_z = None

    def estimate_all(files: np.ndarray) -> list[UpAxis]:
        if est is None:
            return [UpAxis(axis, "estimated", scores) for axis, scores in map(comp.estimate_up_axis, files)]
        return est.estimate_many(files)

    hits, unsure, picks, turned_to = [], [], [], []
    for axis in UP_AXES:
        files = np.stack([turn_z_up_to(p, axis) for p in pts]).astype(np.float32)
        chosen = estimate_all(files)
        if axis == "z":
            chosen_z = [u.axis for u in chosen]
        h = np.array([u.axis == axis for u in chosen])
        n = np.array([u.unsure for u in chosen])
        hits.append(h)
        unsure.append(n)
        picks += [u.axis for u in chosen]
        turned_to += [axis] * len(chosen)
        lines.append(f"| {axis} | {h.mean():.1%} | {n.mean():.1%} | {(~h & ~n).mean():.1%} |")
    hits, unsure = np.concatenate(hits), np.concatenate(unsure)
    lines.append(f"| all six | **{hits.mean():.1%}** | {unsure.mean():.1%} | {(~hits & ~unsure).mean():.1%} |")
    lines += ["", miss_summary(hits, unsure, picks, turned_to, np.tile(test.labels[idx], len(UP_AXES)),
                               test.class_names)]
    if est is not None and est.validation.get("rows"):
        lines += held_out_rows(est.validation)
    if est is not None:
        lines += held_out_unsure_rows(est, train)
    # accuracy cost of the default on z-up files
    oa = {}
    for role, m in (("teacher", comp.teacher), ("student", comp.student)):
        z = m.logits(pts).argmax(1)
        auto_in = np.stack([convert_up_axis(p, a, "z") for p, a in zip(pts, chosen_z)]).astype(np.float32)
        auto = m.logits(auto_in).argmax(1)
        y = test.labels[idx]
        oa[role] = (float((z == y).mean()), float((auto == y).mean()))
    lines += ["", "Overall accuracy on the same z-up test files, `--up z` against the default:", "",
              "| model | `--up z` | default (`auto`) | cost |", "| --- | --- | --- | --- |"]
    for role, (z, auto) in oa.items():
        lines.append(f"| {role} | {z:.2%} | {auto:.2%} | {100 * (z - auto):.2f} points |")
    return lines


def miss_summary(hits: np.ndarray, unsure: np.ndarray, picks: list[str], turned_to: list[str],
                 labels: np.ndarray, class_names: list[str]) -> str:
    """Where the estimate goes wrong: the share of misses that leave the shape upside down (the
    file's own down axis taken for up) and the classes with the most misses."""
    flips = [p == (a[1:] if a.startswith("-") else "-" + a) for p, a in zip(picks, turned_to)]
    misses = ~hits
    if not misses.any():
        return "The estimate missed none of these files."
    upside_down = float(np.mean(np.array(flips)[misses]))
    counts = {c: int(misses[labels == c].sum()) for c in np.unique(labels[misses])}
    worst = sorted(counts, key=lambda c: -counts[c])[:6]
    classes = ", ".join(f"{class_names[c]} {counts[c]} of {int((labels == c).sum())} files" for c in worst)
    return (f"Of its misses, {upside_down:.0%} leave the shape upside down and the rest lay it on a side; "
            f"{np.mean(unsure[misses]):.0%} of the misses are flagged unsure. The classes with the most misses "
            f"(of their turned files): {classes}. For objects like these, check the axis or name it (`--up`, "
            "the app's *Up axis* box).")


def held_out_rows(validation: dict) -> list[str]:
    """The margin trade-off the training script measured on held-out training shapes (stored in the
    estimator): z kept and all six restored per margin, at the dataset's heading and at any heading."""
    yaw = {r["margin"]: r for r in validation.get("any_heading_rows", [])}
    lines = ["", f"Held out while training it ({validation['shapes']} shapes, {validation['held_out']}; the margin "
             f"chosen: {validation.get('margin_rule', 'see the training script')}):", "",
             "| margin | z kept | all six restored | at any heading: z kept | at any heading: all six |",
             "| --- | --- | --- | --- | --- |"]
    for r in validation["rows"]:
        ry = yaw.get(r["margin"], {})
        cells = [f"{ry[k]:.1%}" if k in ry else "-" for k in ("z", "all_six")]
        lines.append(f"| {r['margin']:g} | {r['z']:.1%} | {r['all_six']:.1%} | {cells[0]} | {cells[1]} |")
    return lines


def held_out_unsure_rows(est, train) -> list[str]:
    """When to call an estimate unsure, on the training split's held-out tenth (the shapes the estimator
    was not trained on), each turned so that a random signed axis points up: the rows the training
    script stored with the estimator, else measured here (``train``: the split it was trained on)."""
    val_idx, _ = held_out_split(len(train))
    rows = est.validation.get("unsure_rows")
    if not rows:
        files, labels = turned_files(train.points[val_idx], np.random.default_rng(0), "none")
        lp = probe_log_probabilities(view_features(est.model, files, label="held out"), est.probe)
        rows = unsure_rows(lp, labels, est.margin)
    lines = ["", f"When to call an estimate unsure: the same held-out tenth ({len(val_idx)} training shapes), each "
             f"turned so that a random signed axis points up, at the estimator's margin; per level of the chosen "
             f"axis's probability, the share of files below it, how often those are wrong, and how often the others "
             f"are (`up_axis_unsure` is below {UP_UNSURE_BELOW:g}):", "",
             "| unsure below | files unsure | wrong when unsure | wrong when not | z-up files unsure |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['below']:g} | {r['unsure']:.1%} | {r['wrong_if_unsure']:.1%} | "
                     f"{r['wrong_if_sure']:.1%} | {r['z_unsure']:.1%} |")
    return lines


def scene_study(test, scans: Path | None, limit: int) -> list[str]:
    rng = np.random.default_rng(0)
    idx = calibration_indices(len(test), limit) if limit else np.arange(len(test))
    called = [check_scene(dense(test.points[i], rng)).scene for i in idx]
    lines = ["## 2. Scenes", "",
             f"- Single objects: ModelNet40 test shapes made as dense as a scan (4,096 points): "
             f"**{np.mean(called):.1%}** of {len(idx)} called scenes."]
    counts = []
    for _k in range(30):
        names = rng.choice(len(test), rng.integers(2, 6), replace=False)
        floor = np.c_[rng.uniform(-1.5, 1.5, (36000, 2)), rng.normal(0, 0.002, 36000)]
        parts = [floor]
        for j, i in enumerate(names):
            s = dense(test.points[i], rng) * 0.3
            s[:, 2] -= s[:, 2].min()
            ang = 2 * np.pi * j / len(names)
            s[:, :2] += 0.9 * np.array([np.cos(ang), np.sin(ang)])
            parts.append(s)
        xyz = np.concatenate(parts)
        found, _ = find_objects(xyz)
        counts.append((check_scene(xyz).scene, len(found) == len(names)))
    counts = np.array(counts)
    lines.append(f"- Composed scenes (2-5 test shapes of about 0.6 m standing on a 3 m floor, 30 scenes): "
                 f"**{counts[:, 0].mean():.0%}** called scenes, object count exact in **{counts[:, 1].mean():.0%}**.")
    if scans is not None and scans.is_dir():
        lines += ["", "| real file | points | scene | reason | objects found |", "| --- | --- | --- | --- | --- |"]
        for f in sorted(scans.iterdir()):
            if f.suffix.lower() not in (".ply", ".pcd", ".obj"):
                continue
            c = load_point_cloud(f)
            chk = check_scene(c.xyz)
            found = len(find_objects(c.xyz)[0]) if chk.scene else "-"
            lines.append(f"| {f.name} | {len(c.xyz):,} | {chk.scene} | {chk.reason} | {found} |")
    return lines


def exposure_clouds(train, cal_shapes: np.ndarray) -> dict:
    """The clouds ``calibrate`` trains and calibrates the exposure score on (the same for every model)."""
    outside, names = oov_shapes(EXPOSURE_PER_FAMILY, seed=1)
    return {"inside": exposure_inside(train.points[exposure_indices(len(train))]), "outside": outside,
            "outside_names": np.array(names), "calibration": calibration_clouds(cal_shapes, "exposure")}


def held_out_families(model, clouds: dict, oov_logits: np.ndarray, families: list[str]) -> tuple[float, float]:
    """The exposure score on families it never saw: for each generated family, its network trained as
    ``calibrate`` trains it (``clouds``: :func:`exposure_clouds`) but without that family, its threshold
    fitted on the calibration clouds; mean AUROC (calibration vs that family) and mean share of that
    family flagged, over the families."""
    inside, outside = model_logits(model, clouds["inside"]), model_logits(model, clouds["outside"])
    cal_logits, names = model_logits(model, clouds["calibration"]), clouds["outside_names"]
    aucs, flagged = [], []
    for fam in dict.fromkeys(families):
        probe = fit_exposure(inside, outside[names != fam])
        cal = vocabulary_score(cal_logits, "exposure", probe)
        held = vocabulary_score(oov_logits[np.array(families) == fam], "exposure", probe)
        aucs.append(auroc(cal, held))
        flagged.append(float((held < fit_threshold(cal, 0.05)).mean()))
    return float(np.mean(aucs)), float(np.mean(flagged))


def vocabulary_study(bundles: list[Path], data: str, train, test, scans: Path | None) -> list[str]:
    oov, families = oov_shapes(10)
    real = []
    if scans is not None and scans.is_dir():
        real = [prepare_points(load_point_cloud(scans / n).xyz, 1024, up_axis=a) for n, a in REAL_OOV]
    cal_shapes = train.points[calibration_indices(len(train), 1000)]
    cal = resample_half(cal_shapes)
    lines = ["## 3. \"Not sure\": the in-vocabulary decision", "",
             "Calibration: 1,000 shapes of the training split (evenly spread), each re-sampled (a random half "
             "of its points, refilled), threshold at 5% of them flagged (`main.py calibrate`). Scores: the maximum "
             "softmax probability (msp), the energy, and `exposure`, a small network on the logits trained to tell "
             f"{EXPOSURE_SHAPES:,} other training shapes from {8 * EXPOSURE_PER_FAMILY} generated objects "
             "(`core.data.oov`, seed 1); for it every in-vocabulary shape (calibration and training) is also seen "
             "as a scanned file reaches the model (made dense, then reduced by `prepare_points`), as the generated "
             "objects are, so that how a cloud was sampled cannot tell the two apart. Out-of-vocabulary objects measured: 80 generated ones (seed 0: tori, "
             "springs, knots, gears, rocks, molecules, pipe elbows, volume noise) and the real meshes "
             f"{', '.join(n for n, _ in REAL_OOV)} (none of the 40 classes, never used in training). The exposure "
             "score has seen other objects of the same eight families, so its AUROC and flagged share on them "
             "are also measured with each family held out of its training in turn (the mean over families): what "
             "it does on a kind of object it never saw. The test split plays no part in any choice.", "",
             "| model | AUROC msp | AUROC energy | AUROC exposure, family held out | score kept | test split flagged | "
             "generated OOV flagged | the same, family held out | real OOV flagged |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    per_family, partial_rows, clouds = {}, [], None
    views = {sev: np.stack([partial_view(p, np.random.default_rng((100, sev, i)), sev) for i, p in enumerate(cal_shapes)])
             for sev in (1, 2, 3)}
    for bundle in bundles:
        for role in ("teacher", "student"):
            m = LoadedModel.load(bundle / f"{role}.pt")
            lc, lo, lt = model_logits(m.model, cal), model_logits(m.model, oov), model_logits(m.model, test.points)
            msp_threshold = fit_threshold(vocabulary_score(lc, "msp"), m.vocabulary.flag_rate)
            lv = {sev: model_logits(m.model, v) for sev, v in views.items()}
            partial_rows.append((m.vocabulary.score, [1 - m.vocabulary.in_vocabulary(lv[sev]).mean() for sev in views],
                                 [(vocabulary_score(lv[sev], "msp") < msp_threshold).mean() for sev in views]))
            au = {k: auroc(vocabulary_score(lc, k), vocabulary_score(lo, k)) for k in ("msp", "energy")}
            cal_rec = m.vocabulary
            held = ("-", "-")
            if cal_rec.score == "exposure":
                clouds = clouds or exposure_clouds(train, cal_shapes)
                auc, share = held_out_families(m.model, clouds, lo, families)
                held = (f"{auc:.3f}", f"{share:.1%}")
            flagged_test = 1 - np.mean(cal_rec.in_vocabulary(lt))
            flagged_oov = 1 - cal_rec.in_vocabulary(lo)
            real_flag = "-"
            if real:
                rl = model_logits(m.model, np.stack(real))
                rf = ~cal_rec.in_vocabulary(rl)
                real_flag = f"{int(rf.sum())} of {len(rf)}"
            name = f"{m.name} ({bundle.name if bundle.name != 'models' else 'pointnet2_ssg'} {role})"
            lines.append(f"| {name} | {au['msp']:.3f} | {au['energy']:.3f} | {held[0]} | {cal_rec.score} | "
                         f"{flagged_test:.1%} | {flagged_oov.mean():.1%} | {held[1]} | {real_flag} |")
            per_family[name] = {f: float(np.mean([fl for fl, g in zip(flagged_oov, families) if g == f]))
                                for f in dict.fromkeys(families)}
            partial_rows[-1] = (name, *partial_rows[-1])
    fams = list(next(iter(per_family.values())))
    lines += ["", "Generated objects flagged, per family:", "", "| model | " + " | ".join(fams) + " |",
              "| --- |" + " --- |" * len(fams)]
    for name, d in per_family.items():
        lines.append(f"| {name} | " + " | ".join(f"{d[f]:.0%}" for f in fams) + " |")
    lines += ["", "Known objects seen from one side: the calibration slice's 1,000 training shapes as single-viewpoint "
              "partial views (docs/PARTIAL_VIEWS.md, severities 1-3, one seeded view each), the share each model "
              "flags with its kept score, and with msp at its own threshold (5% of the calibration slice) for "
              "comparison:", "",
              "| model | score kept | severity 1 | severity 2 | severity 3 | msp: severity 1 | msp: 2 | msp: 3 |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, score, kept, msp in partial_rows:
        lines.append(f"| {name} | {score} | " + " | ".join(f"{v:.1%}" for v in kept + msp) + " |")
    return lines


def timing_study(comp: Comparison, scans: Path | None) -> list[str]:
    if scans is None or not scans.is_dir():
        return []
    lines = ["## 4. Scene to objects: time", "",
             "`Comparison.predict_cloud(cloud, objects=True)` (what `predict FILE --objects` runs after reading "
             "the file): scene check, up axis, object finding and both models on every object; median of 3 "
             "after one warm-up call.", "", "| scan | points | objects | seconds |", "| --- | --- | --- | --- |"]
    for name, cap in (("fragment.pcd", None), ("table_scene_mug_stereo_textured.pcd", 120000)):
        cloud = load_point_cloud(scans / name)
        if cap and len(cloud.xyz) > cap:
            cloud.xyz = cloud.xyz[np.random.default_rng(0).choice(len(cloud.xyz), cap, replace=False)]
        comp.predict_cloud(cloud, objects=True)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            res = comp.predict_cloud(cloud, objects=True)
            times.append(time.perf_counter() - t0)
        lines.append(f"| {name} | {len(cloud.xyz):,} | {len(res['objects'])} | {np.median(times):.2f} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--scans", default=None)
    ap.add_argument("--out", default=str(ROOT / "docs" / "REAL_FILES.md"))
    ap.add_argument("--limit", type=int, default=0, help="test shapes for the axis and scene studies (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    scans = Path(args.scans) if args.scans else None
    comp = Comparison.from_paths()
    train = load_split(args.data, "train", 1024, progress=False)
    test = load_split(args.data, "test", 1024, progress=False)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = []
    body += axis_study(comp, train, test, args.limit) + [""]
    body += scene_study(test, scans, args.limit) + [""]
    body += vocabulary_study([ROOT / "assets" / "models", ROOT / "assets" / "models" / "pointnet"], args.data,
                             train, test, scans) + [""]
    body += timing_study(comp, scans)
    cmd = "python scripts/real_files_study.py " + " ".join(sys.argv[1:] if argv is None else argv)
    head = ["# Real files: measured", "",
            "What the up-axis estimate, the scene check and the in-vocabulary decision do on data with a known "
            "answer. Regenerate with:", "", f"    {cmd}", "",
            f"Measured {started} on {machine_line()}, {args.threads} thread{'s' * (args.threads != 1)}, "
            f"Python {platform.python_version()}.", ""]
    Path(args.out).write_text("\n".join(head + body) + "\n")
    print("\n".join(head + body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
