"""Training jobs: scratch training, NetAug, distillation, the T3DNet pipeline and its baselines.

A :class:`Trainer` runs one stage in a run directory. It is observable (every step and epoch
emits a typed event with named scalars, :mod:`core.engine.events`), cancellable (a ``threading.Event`` checked between steps;
cancelling leaves a checkpoint that resumes mid-epoch) and exactly resumable (model, optimizer,
step counter, epoch permutation, every RNG state and the best metric are checkpointed).

Runs in whatever thread or process calls :meth:`Trainer.fit`; the GUI runs it in a separate
process (``main.py run JOB.yaml --events json``) and reads the events as JSON lines.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from core import __version__
from core.data.datasets import cache_dir, load_split
from core.data.augment import partial_views_per_shape
from core.models import ClassifierBase, create_model, reestimate_bn
from core.models.complexity import count_macs, count_parameters, grouping_cost

from . import distributed as dist_utils
from .checkpoint import TEST_SELECTED, CheckpointError, atomic_save, load_model, model_state, read_checkpoint
from .config import JobConfig, config_from_dict, resolve_precision
from .events import (CancelledEvent, EndEvent, EpochEvent, ErrorEvent, Event, JsonlWriter, ProgressEvent, StageEvent,
                     StartEvent, StepEvent)
from .grouping import GroupingCache
from .jobs import AUGMENTED_JOBS, METHODS, STAGE_JOBS, TEACHER_JOBS
from .losses import feature_loss, kd_loss, kl_divergence
from .machine import describe_machine
from .metrics import classification_metrics, measure_latency

VIEW_SEED = 0  # seed of the cached teacher views (fixed: the cache is shared across run seeds)


class JobCancelled(Exception):
    """Raised inside :meth:`Trainer.fit` after a cancel request, once the checkpoint is saved."""


class JobError(RuntimeError):
    """A job that cannot run (bad data, incompatible teacher, ...); the message says why."""


def _noop(event: Event) -> None:
    pass


class Trainer:
    """One training stage (``cfg.job`` in :data:`~core.engine.jobs.STAGE_JOBS`) in ``run_dir``."""

    def __init__(self, cfg: JobConfig, run_dir: str | Path, sink: Callable[[Event], None] | None = None,
                 cancel: threading.Event | None = None, stage: str | None = None) -> None:
        self.cfg = cfg
        self.job = stage or cfg.job
        if self.job not in STAGE_JOBS:
            raise JobError(f"{self.job!r} is not a single-stage job")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.sink = sink or _noop
        self.cancel = cancel or threading.Event()
        self.dist = dist_utils.DistInfo.from_env()
        self._writer = JsonlWriter(self.run_dir / "events.jsonl") if self.dist.is_main else None
        self.device = torch.device(_pick_device(cfg.device, self.dist))
        self.precision = resolve_precision(cfg.precision, self.device.type)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)

    # -- events -------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Send an event, marked with this stage, to the run's ``events.jsonl`` (progress events
        excepted) and to the caller's sink (rank 0 only)."""
        if self.dist.is_main:
            event.stage = event.stage or self.job
            if not isinstance(event, ProgressEvent):
                self._writer(event)
            self.sink(event)

    # -- set-up -------------------------------------------------------------------------------
    def _setup(self, load_init: bool = True) -> None:
        cfg = self.cfg
        if not cfg.data:
            raise JobError("no dataset given (data)")
        if not self.dist.is_main:  # rank 0 builds the preprocessing cache once, the others read it
            dist_utils.barrier(self.dist)
        self.train_set = load_split(cfg.data, "train", cfg.num_points)
        self.test_set = load_split(cfg.data, "test", cfg.num_points)
        if self.dist.is_main:
            dist_utils.barrier(self.dist)
        if cfg.limit_train:
            self.train_set = _subset(self.train_set, cfg.limit_train)
        if cfg.limit_test:
            self.test_set = _subset(self.test_set, cfg.limit_test)
        if len(self.train_set) < cfg.batch_size:
            raise JobError(f"{cfg.data}: {len(self.train_set)} training shapes, fewer than one batch ({cfg.batch_size})")
        self.class_names = list(self.train_set.class_names)
        nc = len(self.class_names)

        torch.manual_seed(cfg.seed)
        factors = cfg.netaug.aug_factors if self.job in AUGMENTED_JOBS else (1.0,)
        arch = {} if cfg.dropout is None else {"dropout": cfg.dropout}
        self.model = create_model(cfg.model, num_classes=nc, width=cfg.width, aug_factors=factors,
                                  **arch).to(self.device)
        if cfg.init and load_init and self.job not in AUGMENTED_JOBS:  # a resumed run has its own weights
            init, _ = load_model(cfg.init, expect_model=cfg.model)
            if init.is_augmentable:  # a NetAug supernet (e.g. a stage-1 last.pt): its tiny model
                init.set_widths("tiny")
                init = init.export()
            if init.model_config.width != cfg.width or init.model_config.num_classes != nc:
                raise JobError(f"{cfg.init}: initial weights have width {init.model_config.width} and "
                               f"{init.model_config.num_classes} classes, job wants {cfg.width} and {nc}")
            self.model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                        for k, v in init.state_dict().items()})
        self.teacher = None
        if self.job in TEACHER_JOBS:
            self.teacher, tck = load_model(cfg.distill.teacher)
            if list(tck["class_names"]) != self.class_names:
                raise JobError(f"{cfg.distill.teacher}: teacher was trained on other classes "
                               f"({len(tck['class_names'])} classes) than {cfg.data} ({nc})")
            self.teacher.to(self.device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.extra = torch.nn.ModuleDict()
        if self.job == "fitnet":
            self.extra["proj"] = torch.nn.Linear(self.model.feature_dim, self.teacher.feature_dim)
        if self.job == "dml":
            torch.manual_seed(cfg.seed + 1)
            self.extra["peer"] = create_model(cfg.model, num_classes=nc, width=cfg.width, **arch)
        self.extra.to(self.device)
        params = list(self.model.parameters()) + list(self.extra.parameters())
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                                             weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        dist_utils.broadcast_module(self.model, self.dist)
        dist_utils.broadcast_module(self.extra, self.dist)

        views = cfg.distill.cache_views if self.teacher is not None else 0
        variants = views or cfg.grouping_variants
        # The training shapes as seen by variant v: clean, or with fixed partial views (one draw per
        # cached variant; with caching off, partial views are drawn per batch in _step).
        self.train_views = self.train_set.points[None]
        if cfg.augment.partial_prob > 0 and variants:
            self.train_views = self._partial_views(variants)
        self.train_groups = GroupingCache(self.model, self.train_views, variants, cfg.seed)
        self.test_groups = GroupingCache(self.model, self.test_set.points, 1, deterministic=True)
        self.teacher_shares = self.teacher is not None and self.teacher.grouping_key() == self.model.grouping_key()
        self.teacher_groups = None
        if self.teacher is not None and not self.teacher_shares:
            self.teacher_groups = GroupingCache(self.teacher, self.train_views, variants, cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.width_rng = random.Random(cfg.seed)
        self.steps_per_epoch = len(self.train_set) // cfg.batch_size
        self.total_steps = self.steps_per_epoch * cfg.epochs
        # The cosine may be longer than this job (a stage of a continuous two-stage schedule).
        self.schedule_steps = self.steps_per_epoch * (cfg.schedule_epochs or cfg.epochs)
        self.schedule_start = self.steps_per_epoch * cfg.schedule_offset
        self.teacher_cache = None
        if views:
            self.teacher_cache = self._build_teacher_cache(views)

    # -- partial views --------------------------------------------------------------------------
    def _data_key(self) -> str:
        cfg = self.cfg
        root = self.train_set.root if hasattr(self.train_set, "root") else cfg.data
        return f"{root}|{len(self.train_set)}|{cfg.limit_train}|{cfg.num_points}"

    def _partial_views(self, variants: int) -> np.ndarray:
        """(variants, N, P, 3): per variant, each training shape clean or one fixed partial view.

        Like the teacher views, they depend on the data and the augmentation settings only (not on
        the run's seed), and are cached on disk: drawing them costs about 10 ms per partial view.
        """
        a = self.cfg.augment
        key = f"{self._data_key()}|{variants}|{VIEW_SEED}|{a.partial_prob}|{tuple(a.partial_severity)}"
        path = cache_dir() / f"partial_views_{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
        if not self.dist.is_main:
            dist_utils.barrier(self.dist)
        views = None
        if path.is_file():
            try:
                with np.load(path) as z:
                    if str(z["key"]) == key:
                        views = z["views"]
            except Exception:  # a truncated cache file is rebuilt
                views = None
        if views is None:
            n = len(self.train_set)
            views = np.empty((variants, *self.train_set.points.shape), np.float32)
            t0 = time.time()
            for v in range(variants):
                def progress(done, total, v=v):
                    self.emit(ProgressEvent(what="partial views", done=v * n + done, total=variants * n,
                                            elapsed=time.time() - t0))
                    if self.cancel.is_set():
                        raise JobCancelled("cancelled while drawing partial views")
                views[v] = partial_views_per_shape(self.train_set.points, a.partial_prob, tuple(a.partial_severity),
                                                seed=(VIEW_SEED, v), progress=progress)
            if self.dist.is_main:
                tmp = path.with_suffix(".tmp.npz")
                np.savez(tmp, key=np.array(key), views=views)
                os.replace(tmp, path)
        if self.dist.is_main:
            dist_utils.barrier(self.dist)
        return views

    def _train_points(self, idx: np.ndarray, variant: int, epoch: int) -> np.ndarray:
        """The training shapes ``idx`` as variant ``variant`` sees them (B, P, 3)."""
        pts = self.train_views[variant % len(self.train_views)][idx]
        a = self.cfg.augment
        if a.partial_prob > 0 and len(self.train_views) == 1 and not self.train_groups.variants:
            pts = partial_views_per_shape(pts, a.partial_prob, tuple(a.partial_severity),
                                       seed=(self.cfg.seed, VIEW_SEED, epoch), indices=idx)
        return pts

    # -- teacher outputs cache ----------------------------------------------------------------
    def _view_params(self, views: int) -> tuple[np.ndarray, np.ndarray]:
        # The views do not depend on the run's seed: every run with the same teacher, data and
        # augmentation shares one cache (seeds differ in the student's init and batch order).
        rng = np.random.default_rng(VIEW_SEED + 104729)
        n = len(self.train_set)
        a = self.cfg.augment
        scale = rng.uniform(a.scale_low, a.scale_high, (views, n, 3 if a.anisotropic else 1))
        if not a.anisotropic:
            scale = np.repeat(scale, 3, axis=2)
        shift = rng.uniform(-a.shift, a.shift, (views, n, 3))
        return scale.astype(np.float32), shift.astype(np.float32)

    @torch.no_grad()
    def _build_teacher_cache(self, views: int) -> dict:
        """Teacher logits and embeddings for ``views`` fixed augmented views of every shape.

        Trade-off: the teacher's forward pass dominates a distillation epoch on a CPU; caching
        costs ``views`` teacher passes over the training set once, after which the student sees
        only those views (fixed scale/shift per view) instead of fresh augmentations.
        """
        cfg = self.cfg
        tck = read_checkpoint(cfg.distill.teacher)
        key = (f"{Path(tck['path']).resolve()}|{os.path.getmtime(tck['path'])}|{views}|{VIEW_SEED}|"
               f"{self._data_key()}|{cfg.augment}|{self.precision}")
        # Shared between runs (KD, T3DNet stage 2, baselines) with the same teacher and views.
        path = cache_dir() / f"teacher_outputs_{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
        if path.is_file():
            try:
                cached = torch.load(path, weights_only=True)
                if cached.get("key") == key:
                    return cached
            except Exception:  # a truncated cache file is rebuilt
                pass
        scale, shift = self._view_params(views)
        n = len(self.train_set)
        logits = torch.zeros(views, n, len(self.class_names), dtype=torch.float16)
        feats = torch.zeros(views, n, self.teacher.feature_dim, dtype=torch.float16)
        t0, done, total = time.time(), 0, views * n
        for v in range(views):
            for lo in range(0, n, 64):
                idx = np.arange(lo, min(n, lo + 64))
                pts = torch.from_numpy(self._train_points(idx, v, 0)) * torch.from_numpy(scale[v, idx]).unsqueeze(1)
                pts = pts + torch.from_numpy(shift[v, idx]).unsqueeze(1)
                groups = (self.train_groups if self.teacher_shares else self.teacher_groups).get(idx, v)
                with self._autocast():
                    f = self.teacher.forward_features(pts.to(self.device), _to(groups, self.device))
                    out = self.teacher.forward_head(f)
                logits[v, idx] = out.float().cpu().half()
                feats[v, idx] = f.float().cpu().half()
                done += len(idx)
                self.emit(ProgressEvent(what="teacher cache", done=done, total=total, elapsed=time.time() - t0))
                if self.cancel.is_set():
                    raise JobCancelled("cancelled while caching teacher outputs")
        cache = {"key": key, "logits": logits, "feats": feats, "scale": torch.from_numpy(scale),
                 "shift": torch.from_numpy(shift)}
        if self.dist.is_main:
            atomic_save(cache, path)
        return cache

    # -- helpers ------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _lr_at(self, step: int) -> float:
        cfg = self.cfg
        step += self.schedule_start
        warm = cfg.warmup_epochs * self.steps_per_epoch
        if step < warm:
            return cfg.lr * (step + 1) / warm
        t = (step - warm) / max(1, self.schedule_steps - warm)
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))

    def _augment(self, pts: torch.Tensor) -> torch.Tensor:
        a, g, b = self.cfg.augment, self.generator, pts.shape[0]
        if a.rotate_up:
            theta = torch.rand(b, generator=g) * 2 * math.pi
            c, s = torch.cos(theta), torch.sin(theta)
            rot = torch.zeros(b, 3, 3)
            rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1
            pts = pts @ rot
        k = 3 if a.anisotropic else 1
        scale = a.scale_low + (a.scale_high - a.scale_low) * torch.rand(b, 1, k, generator=g)
        shift = (torch.rand(b, 1, 3, generator=g) * 2 - 1) * a.shift
        pts = pts * scale + shift
        if a.jitter > 0:
            pts = pts + (torch.randn(pts.shape, generator=g) * a.jitter).clamp(-5 * a.jitter, 5 * a.jitter)
        return pts

    def _aug_active(self, epoch: int) -> bool:
        # Off for the last ``stop_fraction`` of the whole schedule (in a continuous T3DNet run, the
        # distillation stage is that last part, so stage 1 augments throughout).
        cfg = self.cfg
        cut = (cfg.schedule_epochs or cfg.epochs) * (1 - cfg.netaug.stop_fraction) - cfg.schedule_offset
        return self.job in AUGMENTED_JOBS and epoch < cut

    # -- one step -----------------------------------------------------------------------------
    def _step(self, idx: np.ndarray, epoch: int) -> tuple[dict, torch.Tensor]:
        cfg, dev = self.cfg, self.device
        views = cfg.distill.cache_views if self.teacher_cache is not None else 0
        variant = epoch % views if views else epoch
        raw_np = self._train_points(idx, variant, epoch)
        fresh = raw_np if not self.train_groups.variants else None  # drawn now: indices computed now
        groups = _to(self.train_groups.get(idx, variant, fresh), dev)
        labels = torch.from_numpy(self.train_set.labels[idx]).to(dev)
        raw = torch.from_numpy(raw_np)
        t_logits = t_feats = None
        if views:
            v = epoch % views
            tidx = torch.from_numpy(idx)
            pts = raw * self.teacher_cache["scale"][v, tidx].unsqueeze(1) + self.teacher_cache["shift"][v, tidx].unsqueeze(1)
            t_logits = self.teacher_cache["logits"][v, tidx].float().to(dev)
            if self.teacher_cache.get("feats") is not None:
                t_feats = self.teacher_cache["feats"][v, tidx].float().to(dev)
            pts = pts.to(dev)
        else:
            pts = self._augment(raw).to(dev)
            if self.teacher is not None:
                tg = groups if self.teacher_shares else _to(self.teacher_groups.get(idx, variant, fresh), dev)
                with torch.no_grad(), self._autocast():
                    t_feats = self.teacher.forward_features(pts, tg)
                    t_logits = self.teacher.forward_head(t_feats).float()
                    t_feats = t_feats.float()
        ls = cfg.label_smoothing
        terms: dict[str, torch.Tensor] = {}
        m = self.model
        if self.job in AUGMENTED_JOBS:
            m.set_widths("tiny")
        with self._autocast():
            if self.job == "fitnet":
                f = m.forward_features(pts, groups)
                logits = m.forward_head(f).float()
                task = F.cross_entropy(logits, labels, label_smoothing=ls)
                hint = feature_loss(self.extra["proj"](f.float()), t_feats)
                loss = task + cfg.distill.feature_weight * hint
                terms.update(task_loss=task.detach(), feat_loss=hint.detach())
            else:
                logits = m(pts, groups).float()
                if t_logits is not None:
                    loss, parts = kd_loss(logits, t_logits, labels, cfg.distill.temperature, cfg.distill.alpha, ls)
                    terms.update(parts)
                else:
                    loss = F.cross_entropy(logits, labels, label_smoothing=ls)
                    terms["task_loss"] = loss.detach()
                if self.job == "dml":
                    peer_logits = self.extra["peer"](pts, groups).float()
                    mimic = kl_divergence(logits, peer_logits.detach())
                    peer_loss = F.cross_entropy(peer_logits, labels, label_smoothing=ls) + kl_divergence(peer_logits, logits.detach())
                    loss = loss + mimic + peer_loss
                    terms.update(mimic_loss=mimic.detach(), peer_loss=peer_loss.detach())
        loss.backward()
        total = loss.detach()
        if self._aug_active(epoch):
            m.set_widths(m.sample_widths(self.width_rng))
            with self._autocast():
                aug_logits = m(pts, groups).float()
                aug = F.cross_entropy(aug_logits, labels, label_smoothing=ls)
            (cfg.netaug.aug_weight * aug).backward()
            m.set_widths("tiny")
            terms["aug_loss"] = aug.detach()
            total = total + cfg.netaug.aug_weight * aug.detach()
        terms["loss"] = total
        correct = (logits.argmax(1) == labels).sum()
        return terms, correct

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def _prepare_eval_model(self) -> ClassifierBase:
        """The model as it is evaluated: for NetAug, the tiny widths with re-estimated BN."""
        m = self.model
        if self.job in AUGMENTED_JOBS:
            m.set_widths("tiny")
            n = len(self.train_set)
            rng = np.random.default_rng(self.cfg.seed + 1)
            order = rng.permutation(n)
            bs = self.cfg.batch_size
            batches = [order[i : i + bs] for i in range(0, min(n, bs * self.cfg.netaug.bn_batches), bs)]
            batches = [b for b in batches if len(b) > 1]
            pts_batches = [torch.from_numpy(self._train_points(b, 0, 0)).to(self.device) for b in batches]
            groups = {id(p): _to(self.train_groups.get(b, 0), self.device) for p, b in zip(pts_batches, batches)}
            reestimate_bn(m, pts_batches, lambda p: groups[id(p)])
        return m

    @torch.no_grad()
    def evaluate(self, model: ClassifierBase | None = None) -> dict:
        model = model or self._prepare_eval_model()
        model.eval()
        preds = []
        n = len(self.test_set)
        for lo in range(0, n, 64):
            idx = np.arange(lo, min(n, lo + 64))
            pts = torch.from_numpy(self.test_set.points[idx]).to(self.device)
            with self._autocast():
                out = model(pts, _to(self.test_groups.get(idx, 0), self.device))
            preds.append(out.float().argmax(1).cpu())
        model.train()
        return classification_metrics(torch.cat(preds).numpy(), self.test_set.labels, len(self.class_names))

    # -- checkpoints --------------------------------------------------------------------------
    def _training_state(self, epoch: int, step_in_epoch: int, perm: np.ndarray, best: float, history: list) -> dict:
        ck = model_state(self.model, self.class_names, {"best_oa": best}, self.cfg.to_dict())
        ck["training"] = {
            "job": self.job,
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": epoch * self.steps_per_epoch + step_in_epoch,
            "perm": torch.from_numpy(perm.astype(np.int64)),
            "optimizer": self.optimizer.state_dict(),
            "extra": {k: v.detach().cpu() for k, v in self.extra.state_dict().items()},
            "torch_rng": torch.get_rng_state(),
            "generator": self.generator.get_state(),
            "width_rng": _encode_random_state(self.width_rng.getstate()),
            "best_oa": best,
            "history": history,
            "elapsed": self.elapsed,
        }
        return ck

    def _save_last(self, *args) -> None:
        if self.dist.is_main:
            atomic_save(self._training_state(*args), self.run_dir / "last.pt")

    def _restore(self, ck: dict) -> tuple[int, int, np.ndarray | None, float, list]:
        tr = ck.get("training")
        if not tr or tr.get("job") != self.job:
            raise CheckpointError(f"{ck.get('path')}: not a resumable {self.job} checkpoint")
        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in ck["state_dict"].items()}
        self.model.load_state_dict(sd)
        self.extra.load_state_dict(tr["extra"])
        self.optimizer.load_state_dict(tr["optimizer"])
        torch.set_rng_state(tr["torch_rng"])
        self.generator.set_state(tr["generator"])
        self.width_rng.setstate(_decode_random_state(tr["width_rng"]))
        self.elapsed = float(tr.get("elapsed", 0.0))
        perm = tr["perm"].numpy() if tr["step_in_epoch"] else None
        return tr["epoch"], tr["step_in_epoch"], perm, float(tr["best_oa"]), list(tr["history"])

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        """Train to the last epoch (or from the last checkpoint), then write the report."""
        try:
            return self._fit(resume)
        except (JobCancelled, KeyboardInterrupt):
            raise
        except Exception as exc:
            self.emit(ErrorEvent(message=str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__))
            raise
        finally:
            if self._writer is not None:
                self._writer.close()

    def _fit(self, resume: bool) -> dict:
        resuming = resume and (self.run_dir / "last.pt").is_file()
        self._setup(load_init=not resuming)  # resuming needs only the run folder, not the init file
        self.elapsed = 0.0
        start_epoch, start_step, perm, best, history = 0, 0, None, -1.0, []
        if resuming:
            start_epoch, start_step, perm, best, history = self._restore(read_checkpoint(self.run_dir / "last.pt"))
        cfg = self.cfg
        (self.run_dir / "config.yaml").write_text(cfg.to_yaml())
        self.emit(StartEvent(job=self.job, epochs=cfg.epochs, steps_per_epoch=self.steps_per_epoch,
                             start_epoch=start_epoch, params=count_parameters(self.model), run_dir=str(self.run_dir),
                             world_size=self.dist.world_size, version=__version__))
        bs_global = cfg.batch_size
        t_begin = time.time() - self.elapsed
        for epoch in range(start_epoch, cfg.epochs):
            if perm is None:
                perm = torch.randperm(len(self.train_set), generator=self.generator).numpy()
            if self.job in AUGMENTED_JOBS and cfg.netaug.sort_channels and self._aug_active(epoch) and start_step == 0:
                self.model.sort_channels(self.optimizer)
            self.model.train()
            ep_t0, ep_loss, ep_correct, ep_seen = time.time(), 0.0, 0, 0
            for step in range(start_step, self.steps_per_epoch):
                if self.cancel.is_set():
                    self.elapsed = time.time() - t_begin
                    self._save_last(epoch, step, perm, best, history)
                    self.emit(CancelledEvent(epoch=epoch, step=step, run_dir=str(self.run_dir)))
                    raise JobCancelled(f"cancelled at epoch {epoch + 1}, step {step}; resume with: resume {self.run_dir}")
                gstep = epoch * self.steps_per_epoch + step
                lr = self._lr_at(gstep)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                batch = perm[step * bs_global : (step + 1) * bs_global]
                local = self.dist.shard(batch)
                s_t0 = time.time()
                self.optimizer.zero_grad(set_to_none=True)
                terms, correct = self._step(local, epoch)
                dist_utils.average_gradients(list(self.model.parameters()) + list(self.extra.parameters()), self.dist)
                self.optimizer.step()
                loss_val = float(terms["loss"])
                if not math.isfinite(loss_val):
                    raise JobError(f"loss became {loss_val} at epoch {epoch + 1}, step {step}: lower the learning rate")
                ep_loss += loss_val * len(local)
                ep_correct += int(correct)
                ep_seen += len(local)
                if step % cfg.log_every == 0 or step == self.steps_per_epoch - 1:
                    self.emit(StepEvent(epoch=epoch, step=step, global_step=gstep + 1, total_steps=self.total_steps,
                                        lr=lr, samples_per_s=len(batch) / max(1e-9, time.time() - s_t0),
                                        train_acc=ep_correct / max(1, ep_seen), elapsed=time.time() - t_begin,
                                        losses={k: float(v) for k, v in terms.items()}))
            start_step = 0
            perm = None
            dist_utils.broadcast_buffers(self.model, self.dist)
            ep_time = time.time() - ep_t0
            metrics = {}
            if self.dist.is_main and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                metrics = self.evaluate()
            val_oa = metrics.get("oa")
            if val_oa is not None and val_oa > best:
                best = val_oa
                if self.dist.is_main:
                    atomic_save(model_state(self._exportable(), self.class_names,
                                            metrics | {"epoch": epoch + 1, "selected_on": "test"},
                                            cfg.to_dict()), self.run_dir / TEST_SELECTED)
            row = EpochEvent(epoch=epoch, epochs=cfg.epochs, lr=self._lr_at((epoch + 1) * self.steps_per_epoch - 1),
                             train_loss=ep_loss / max(1, ep_seen), train_acc=ep_correct / max(1, ep_seen),
                             val_oa=val_oa, val_macc=metrics.get("macc"), best_oa=best, epoch_time=ep_time,
                             samples_per_s=ep_seen * self.dist.world_size / max(1e-9, ep_time),
                             elapsed=time.time() - t_begin)
            history.append(row.payload())
            self.elapsed = time.time() - t_begin
            self._save_last(epoch + 1, 0, np.zeros(0, np.int64), best, history)
            self.emit(row)
            dist_utils.barrier(self.dist)
        return self._finish(best, history)

    def _exportable(self) -> ClassifierBase:
        return self.model.export() if self.model.is_augmentable else self.model

    def _finish(self, best: float, history: list) -> dict:
        in_sync = dist_utils.params_in_sync(self.model, self.dist)
        if not self.dist.is_main:
            return {}
        if self.job in AUGMENTED_JOBS:
            self._prepare_eval_model()
        final = self._exportable().eval()
        metrics = self.evaluate(final)
        report = {
            "job": self.job,
            "model": final.model_config.to_dict(),
            "oa": metrics["oa"],
            "macc": metrics["macc"],
            "n": metrics["n"],
            "best_oa": best,
            "per_class_acc": dict(zip(self.class_names, metrics["per_class_acc"])),
            "confusion": metrics["confusion"],
            "class_names": self.class_names,
            "params": count_parameters(final),
            "macs": count_macs(final, self.cfg.num_points),
            "grouping_distances": grouping_cost(final, self.cfg.num_points),
            "latency_ms_cpu_b1": measure_latency(final, self.cfg.num_points),
            "threads": torch.get_num_threads(),
            "precision": self.precision,
            "machine": describe_machine(),
            "epochs": self.cfg.epochs,
            "train_time_s": self.elapsed,
            "world_size": self.dist.world_size,
            "ranks_in_sync": in_sync,
            "history": history,
            "version": __version__,
        }
        name = "student.pt" if (self.job != "train" or self.cfg.width < 1) else "model.pt"
        atomic_save(model_state(final, self.class_names, {k: report[k] for k in ("oa", "macc", "params", "macs")},
                                self.cfg.to_dict()), self.run_dir / name)
        report["checkpoint"] = str(self.run_dir / name)
        _write_report(self.run_dir, report)
        self.emit(EndEvent(oa=report["oa"], macc=report["macc"], params=report["params"], macs=report["macs"],
                           checkpoint=report["checkpoint"], run_dir=str(self.run_dir)))
        return report


# -- the T3DNet pipeline ------------------------------------------------------------------------


def run_job(cfg: JobConfig, run_dir: str | Path, sink=None, cancel=None, resume: bool = False) -> dict:
    """Run any job in ``run_dir``. A pipeline (``t3dnet``: NetAug, then distillation from stage 1's
    student) runs each stage in its own subfolder and announces it with a :class:`StageEvent`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "job.yaml").write_text(cfg.to_yaml())
    method = METHODS[cfg.job]
    if not method.is_pipeline:
        return Trainer(cfg, run_dir, sink, cancel).fit(resume)
    sink = sink or _noop
    (augment, distill), of = method.stages, len(method.stages)
    stage1_dir, stage2_dir = run_dir / method.stage_dir(1), run_dir / method.stage_dir(2)
    kd_epochs = cfg.kd_epochs or cfg.epochs
    if not (stage1_dir / "report.json").is_file():
        sink(StageEvent(stage=augment, index=1, of=of, epoch_offset=0))
        s1 = cfg.to_dict() | {"job": augment}
        if cfg.stage_schedule == "continuous":
            s1 |= {"schedule_epochs": cfg.epochs + kd_epochs, "schedule_offset": 0}
        s1 = config_from_dict(s1)
        Trainer(s1, stage1_dir, sink, cancel).fit(resume)
    sink(StageEvent(stage=distill, index=2, of=of, epoch_offset=cfg.epochs))
    d2 = cfg.to_dict()
    d2["job"] = distill
    d2["epochs"] = kd_epochs
    d2["init"] = str(stage1_dir / "student.pt")
    if cfg.stage_schedule == "continuous":
        d2["schedule_epochs"], d2["schedule_offset"] = cfg.epochs + kd_epochs, cfg.epochs
    report = Trainer(config_from_dict(d2), stage2_dir, sink, cancel).fit(resume)
    if report:
        report = dict(report, job=cfg.job, stages=[str(stage1_dir), str(stage2_dir)])
        _write_report(run_dir, report)
        shutil.copyfile(stage2_dir / "student.pt", run_dir / "student.pt")
    return report


def resume_run(run_dir: str | Path, sink=None, cancel=None) -> dict:
    """Continue a run directory where it stopped (its own saved configuration)."""
    run_dir = Path(run_dir)
    path = run_dir / "job.yaml"
    if not path.is_file():
        raise JobError(f"{run_dir}: not a run directory (no job.yaml)")
    cfg = config_from_dict(yaml.safe_load(path.read_text()))
    return run_job(cfg, run_dir, sink, cancel, resume=True)


# -- small helpers ------------------------------------------------------------------------------


def _write_report(run_dir: Path, report: dict) -> None:
    import json

    from .metrics import report_markdown

    (run_dir / "report.json").write_text(json.dumps(report, indent=1))
    (run_dir / "report.md").write_text(report_markdown(report))


def _subset(ds, limit: int):
    """An evenly spread, deterministic subset (keeps every class when possible)."""
    if limit >= len(ds):
        return ds
    idx = np.linspace(0, len(ds) - 1, limit).round().astype(int)
    from dataclasses import replace

    return replace(ds, points=ds.points[idx], labels=ds.labels[idx],
                   shape_ids=[ds.shape_ids[i] for i in idx] if ds.shape_ids else [])


def _to(tree, device):
    if tree is None or device.type == "cpu":
        return tree
    if torch.is_tensor(tree):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: _to(v, device) for k, v in tree.items()}
    return type(tree)(_to(v, device) for v in tree)


def _pick_device(name: str, dist) -> str:
    if name == "auto":
        if torch.cuda.is_available():
            return f"cuda:{dist.local_rank}" if dist.world_size > 1 else "cuda"
        return "cpu"
    return name


def _encode_random_state(state) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _decode_random_state(s) -> tuple:
    return (s[0], tuple(s[1]), s[2])
