"""The training loop: one stage of a job in a run folder, and :func:`run_job` for any job.

:class:`Trainer` owns the loop: the data (shapes, partial views, cached sampling and grouping
indices, cached teacher outputs, augmentation through :mod:`core.data.augment`), the optimizer and
its learning-rate schedule, the precision, gradient averaging across ranks, cancellation (a
``threading.Event`` checked between steps) and exact resume (model, optimizer, step counter, epoch
permutation, every random state and the best metric are checkpointed). What a step computes is the
job's method (:mod:`core.engine.methods`); what happens around the steps (evaluation, checkpoints,
the report, the event log, progress, TensorBoard) is its callbacks' (:mod:`core.engine.callbacks`),
which receive every event (:mod:`core.engine.events`).

Runs in whatever thread or process calls :meth:`Trainer.fit`; the GUI runs it in a separate
process (``main.py run JOB.yaml --events json``) and reads the events as JSON lines.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from core import __version__
from core.data.augment import TrainingAugmentation, partial_views_per_shape
from core.data.datasets import cache_dir, load_split
from core.models import ClassifierBase, create_model
from core.models.complexity import count_macs, count_parameters, grouping_cost

from . import distributed as dist_utils
from .callbacks import Callback, CallbackList, Sink, TensorBoard, stage_callbacks, write_report
from .checkpoint import CheckpointError, atomic_save, load_model, model_state, read_checkpoint
from .config import JobConfig, config_from_dict, resolve_precision
from .events import CancelledEvent, EndEvent, EpochEvent, ErrorEvent, Event, ProgressEvent, StageEvent, StartEvent, StepEvent
from .grouping import GroupingCache
from .jobs import METHODS, STAGE_JOBS
from .machine import describe_machine
from .methods import METHOD_CLASSES, Batch
from .metrics import classification_metrics, measure_latency

VIEW_SEED = 0  # seed of the cached teacher views (fixed: the cache is shared across run seeds)


class JobCancelled(Exception):
    """Raised inside :meth:`Trainer.fit` after a cancel request, once the checkpoint is saved."""


class JobError(RuntimeError):
    """A job that cannot run (bad data, incompatible teacher, ...); the message says why."""


@dataclass
class FitState:
    """Where the loop stands: what ``last.pt`` keeps besides the weights, and what callbacks read.

    Attributes:
        epoch: the epoch running; after an epoch's end, the next one.
        step: the next step of that epoch.
        perm: that epoch's order of the training shapes (None: not drawn yet).
        best_oa: the best test-split accuracy so far (-1: none yet).
        history: every finished epoch's summary (an :class:`~core.engine.events.EpochEvent`'s payload).
        elapsed: training seconds so far, over every session of the run.
        metrics: the evaluation of the epoch just trained ({}: not evaluated).
        new_best: whether that evaluation improved ``best_oa``.
    """

    epoch: int = 0
    step: int = 0
    perm: np.ndarray | None = None
    best_oa: float = -1.0
    history: list = field(default_factory=list)
    elapsed: float = 0.0
    metrics: dict = field(default_factory=dict)
    new_best: bool = False


class Trainer:
    """One training stage (``cfg.job`` in :data:`~core.engine.jobs.STAGE_JOBS`) in ``run_dir``.

    Args:
        cfg: the stage's configuration.
        run_dir: its run folder (created).
        sink: a function that gets every event (shorthand for a :class:`~core.engine.callbacks.Sink`).
        cancel: set it to stop the stage between steps; the stage then saves a resumable checkpoint.
        stage: the single-stage job to run (default ``cfg.job``).
        callbacks: the caller's callbacks, after the stage's own (evaluation, checkpoints, report,
            event log); all run on rank 0 only.
    """

    def __init__(self, cfg: JobConfig, run_dir: str | Path, sink: Callable[[Event], None] | None = None,
                 cancel: threading.Event | None = None, stage: str | None = None,
                 callbacks: list[Callback] | tuple = (), job_dir: str | Path | None = None) -> None:
        self.cfg = cfg
        #: The folder ``resume`` takes to continue this stage: its own, or its pipeline's run folder.
        self.job_dir = Path(job_dir or run_dir)
        self.job = stage or cfg.job
        if self.job not in STAGE_JOBS:
            raise JobError(f"{self.job!r} is not a single-stage job")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cancel = cancel or threading.Event()
        self.dist = dist_utils.DistInfo.from_env()
        mine = [*stage_callbacks(self.run_dir), *callbacks, *([Sink(sink)] if sink else [])] if self.dist.is_main else []
        self.callbacks = CallbackList(mine)
        self.device = torch.device(_pick_device(cfg.device, self.dist))
        self.precision = resolve_precision(cfg.precision, self.device.type)
        self.method = METHOD_CLASSES[self.job](self)
        self.augmentation = TrainingAugmentation.from_config(cfg.augment)
        self.state = FitState()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)

    # -- events -------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Send an event, marked with this stage, to the callbacks (rank 0 only)."""
        event.stage = event.stage or self.job
        self.callbacks.emit(self, event)

    # -- set-up -------------------------------------------------------------------------------
    def _setup(self, load_init: bool = True) -> None:
        cfg, method = self.cfg, self.method
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

        # The order of everything that draws from torch's global generator is part of the numerics:
        # the model, the initial weights, the teacher, then the method's own modules.
        torch.manual_seed(cfg.seed)
        factors = cfg.netaug.aug_factors if method.supernet else (1.0,)
        arch = {} if cfg.dropout is None else {"dropout": cfg.dropout}
        self.model = create_model(cfg.model, num_classes=nc, width=cfg.width, aug_factors=factors,
                                  **arch).to(self.device)
        if cfg.init and load_init and method.accepts_init:  # a resumed run has its own weights
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
        if method.needs_teacher:
            self.teacher, tck = load_model(cfg.distill.teacher)
            if list(tck["class_names"]) != self.class_names:
                raise JobError(f"{cfg.distill.teacher}: teacher was trained on other classes "
                               f"({len(tck['class_names'])} classes) than {cfg.data} ({nc})")
            self.teacher.to(self.device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        method.setup()
        method.extra.to(self.device)
        self.params = list(self.model.parameters()) + list(method.extra.parameters())
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                                             weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        dist_utils.broadcast_module(self.model, self.dist)
        dist_utils.broadcast_module(method.extra, self.dist)

        views = cfg.distill.cache_views if self.teacher is not None else 0
        variants = views or cfg.grouping_variants
        # The training shapes as seen by variant v: clean, or with fixed partial views (one draw per
        # cached variant; with caching off, partial views are drawn per batch in train_points).
        self.train_views = self.train_set.points[None]
        if cfg.augment.partial_prob > 0 and variants:
            self.train_views = self._partial_views(variants)
        self.train_groups = GroupingCache(self.model, self.train_views, variants, cfg.seed)
        self.test_groups = GroupingCache(self.model, self.test_set.points, 1, deterministic=True)
        self.teacher_shares = self.teacher is not None and self.teacher.grouping_key() == self.model.grouping_key()
        self.teacher_groups = None
        if self.teacher is not None and not self.teacher_shares:
            self.teacher_groups = GroupingCache(self.teacher, self.train_views, variants, cfg.seed)
        # The run's generator: the epochs' shape orders and the live augmentation draw from it.
        self.generator = torch.Generator().manual_seed(cfg.seed)
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

    def train_points(self, idx: np.ndarray, variant: int, epoch: int) -> np.ndarray:
        """The training shapes ``idx`` as variant ``variant`` sees them in ``epoch`` (B, P, 3): clean or
        a partial view, not yet augmented. Without cached indices, partial views are drawn per epoch
        (seeded by the run's seed, the epoch and the shape: a resumed run repeats them)."""
        pts = self.train_views[variant % len(self.train_views)][idx]
        a = self.cfg.augment
        if a.partial_prob > 0 and len(self.train_views) == 1 and not self.train_groups.variants:
            pts = partial_views_per_shape(pts, a.partial_prob, tuple(a.partial_severity),
                                          seed=(self.cfg.seed, VIEW_SEED, epoch), indices=idx)
        return pts

    # -- teacher outputs cache ----------------------------------------------------------------
    @torch.no_grad()
    def _build_teacher_cache(self, views: int) -> dict:
        """Teacher logits and embeddings for ``views`` fixed augmented views of every shape.

        Trade-off: the teacher's forward pass dominates a distillation epoch on a CPU; caching
        costs ``views`` teacher passes over the training set once, after which the student sees
        only those views (fixed scale/shift per view) instead of fresh augmentations. The views do
        not depend on the run's seed: every run with the same teacher, data and augmentation
        shares one cache (seeds differ in the student's init and batch order).
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
        n = len(self.train_set)
        scale, shift = self.augmentation.view_params(views, n, seed=VIEW_SEED + 104729)
        logits = torch.zeros(views, n, len(self.class_names), dtype=torch.float16)
        feats = torch.zeros(views, n, self.teacher.feature_dim, dtype=torch.float16)
        t0, done, total = time.time(), 0, views * n
        for v in range(views):
            for lo in range(0, n, 64):
                idx = np.arange(lo, min(n, lo + 64))
                pts = self.augmentation.scale_shift(torch.from_numpy(self.train_points(idx, v, 0)),
                                                    torch.from_numpy(scale[v, idx]).unsqueeze(1),
                                                    torch.from_numpy(shift[v, idx]).unsqueeze(1))
                groups = (self.train_groups if self.teacher_shares else self.teacher_groups).get(idx, v)
                with self.autocast():
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

    # -- batches ------------------------------------------------------------------------------
    def batch(self, idx: np.ndarray, epoch: int) -> Batch:
        """The training shapes ``idx`` as a batch of ``epoch``: their view, indices and augmentation
        (the cached view's scale and shift with the teacher's outputs on it, or fresh draws)."""
        cfg, dev = self.cfg, self.device
        views = cfg.distill.cache_views if self.teacher_cache is not None else 0
        variant = epoch % views if views else epoch
        raw_np = self.train_points(idx, variant, epoch)
        fresh = raw_np if not self.train_groups.variants else None  # drawn now: indices computed now
        groups = _to(self.train_groups.get(idx, variant, fresh), dev)
        labels = torch.from_numpy(self.train_set.labels[idx]).to(dev)
        raw = torch.from_numpy(raw_np)
        if views:
            cache, tidx = self.teacher_cache, torch.from_numpy(idx)
            pts = self.augmentation.scale_shift(raw, cache["scale"][variant, tidx].unsqueeze(1),
                                                cache["shift"][variant, tidx].unsqueeze(1))
            t_logits = cache["logits"][variant, tidx].float().to(dev)
            t_feats = cache["feats"][variant, tidx].float().to(dev) if cache.get("feats") is not None else None
            return Batch(idx, epoch, pts.to(dev), labels, groups, teacher_logits=t_logits, teacher_features=t_feats)
        pts = self.augmentation(raw, self.generator).to(dev)
        batch = Batch(idx, epoch, pts, labels, groups)
        if self.teacher is not None:
            batch.teacher_groups = groups if self.teacher_shares else _to(self.teacher_groups.get(idx, variant, fresh), dev)
        return batch

    def bn_batches(self, count: int) -> list[tuple[torch.Tensor, object]]:
        """Up to ``count`` batches of training shapes (variant 0, not augmented), in a fixed order,
        with their sampling and grouping indices: what BatchNorm statistics are re-estimated on."""
        n, bs = len(self.train_set), self.cfg.batch_size
        order = np.random.default_rng(self.cfg.seed + 1).permutation(n)
        batches = [order[i : i + bs] for i in range(0, min(n, bs * count), bs)]
        batches = [b for b in batches if len(b) > 1]
        points = [torch.from_numpy(self.train_points(b, 0, 0)).to(self.device) for b in batches]
        groups = [_to(self.train_groups.get(b, 0), self.device) for b in batches]
        return list(zip(points, groups))

    # -- precision and schedule ---------------------------------------------------------------
    def autocast(self):
        """The forward passes' precision: bf16 autocast, or none (fp32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def backward(self, loss: torch.Tensor) -> None:
        """Add ``loss``'s gradients to the parameters' (a method may call it more than once per step)."""
        loss.backward()

    def lr_at(self, step: int) -> float:
        """The learning rate of this stage's step ``step`` (0-based): linear warm-up, then a cosine to ``min_lr``."""
        cfg = self.cfg
        step += self.schedule_start
        warm = cfg.warmup_epochs * self.steps_per_epoch
        if step < warm:
            return cfg.lr * (step + 1) / warm
        t = (step - warm) / max(1, self.schedule_steps - warm)
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))

    # -- evaluation ---------------------------------------------------------------------------
    def exportable(self, model: ClassifierBase | None = None) -> ClassifierBase:
        """The model as a plain classifier (a NetAug supernet's tiny model, exported)."""
        model = model or self.model
        return model.export() if model.is_augmentable else model

    @torch.no_grad()
    def evaluate(self, model: ClassifierBase | None = None) -> dict:
        """Accuracy on the test split of ``model`` (default: the method's evaluated model)."""
        model = model or self.method.eval_model()
        model.eval()
        preds = []
        n = len(self.test_set)
        for lo in range(0, n, 64):
            idx = np.arange(lo, min(n, lo + 64))
            pts = torch.from_numpy(self.test_set.points[idx]).to(self.device)
            with self.autocast():
                out = model(pts, _to(self.test_groups.get(idx, 0), self.device))
            preds.append(out.float().argmax(1).cpu())
        model.train()
        return classification_metrics(torch.cat(preds).numpy(), self.test_set.labels, len(self.class_names))

    # -- checkpoints --------------------------------------------------------------------------
    def training_state(self) -> dict:
        """``last.pt``: the model and everything an exact resume from :attr:`state` needs."""
        s = self.state
        perm = s.perm if s.perm is not None else np.zeros(0, np.int64)
        ck = model_state(self.model, self.class_names, {"best_oa": s.best_oa}, self.cfg.to_dict())
        method = self.method.state_dict()
        ck["training"] = {
            "job": self.job,
            "epoch": s.epoch,
            "step_in_epoch": s.step,
            "global_step": s.epoch * self.steps_per_epoch + s.step,
            "perm": torch.from_numpy(perm.astype(np.int64)),
            "optimizer": self.optimizer.state_dict(),
            "extra": method["extra"],
            "torch_rng": torch.get_rng_state(),
            "generator": self.generator.get_state(),
            "width_rng": method["width_rng"],
            "best_oa": s.best_oa,
            "history": s.history,
            "elapsed": s.elapsed,
        }
        return ck

    def _restore(self, ck: dict) -> None:
        tr = ck.get("training")
        if not tr or tr.get("job") != self.job:
            raise CheckpointError(f"{ck.get('path')}: not a resumable {self.job} checkpoint")
        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in ck["state_dict"].items()}
        self.model.load_state_dict(sd)
        self.method.load_state_dict(tr)
        self.optimizer.load_state_dict(tr["optimizer"])
        torch.set_rng_state(tr["torch_rng"])
        self.generator.set_state(tr["generator"])
        self.state = FitState(epoch=tr["epoch"], step=tr["step_in_epoch"],
                              perm=tr["perm"].numpy() if tr["step_in_epoch"] else None,
                              best_oa=float(tr["best_oa"]), history=list(tr["history"]),
                              elapsed=float(tr.get("elapsed", 0.0)))

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        """Train to the last epoch (or from the last checkpoint); returns the final report ({} on
        ranks other than 0)."""
        try:
            return self._fit(resume)
        except (JobCancelled, KeyboardInterrupt):
            raise
        except Exception as exc:
            self.emit(ErrorEvent(message=str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__))
            raise
        finally:
            self.callbacks.call("teardown", self)

    def _fit(self, resume: bool) -> dict:
        resuming = resume and (self.run_dir / "last.pt").is_file()
        self._setup(load_init=not resuming)  # resuming needs only the run folder, not the init file
        self.state = FitState()
        if resuming:
            self._restore(read_checkpoint(self.run_dir / "last.pt"))
        cfg, s = self.cfg, self.state
        (self.run_dir / "config.yaml").write_text(cfg.to_yaml())
        self.emit(StartEvent(job=self.job, epochs=cfg.epochs, steps_per_epoch=self.steps_per_epoch,
                             start_epoch=s.epoch, params=count_parameters(self.model), run_dir=str(self.run_dir),
                             world_size=self.dist.world_size, version=__version__))
        bs = cfg.batch_size
        t_begin = time.time() - s.elapsed
        for epoch in range(s.epoch, cfg.epochs):
            s.epoch = epoch
            if s.perm is None:
                s.perm = torch.randperm(len(self.train_set), generator=self.generator).numpy()
            if s.step == 0:
                self.method.on_epoch_start(epoch)
            self.model.train()
            ep_t0, ep_loss, ep_correct, ep_seen = time.time(), 0.0, 0, 0
            for step in range(s.step, self.steps_per_epoch):
                s.step = step
                if self.cancel.is_set():
                    s.elapsed = time.time() - t_begin
                    self.emit(CancelledEvent(epoch=epoch, step=step, run_dir=str(self.run_dir)))
                    raise JobCancelled(f"cancelled at epoch {epoch + 1}, step {step}; resume with: resume {self.job_dir}")
                gstep = epoch * self.steps_per_epoch + step
                lr = self.lr_at(gstep)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                indices = s.perm[step * bs : (step + 1) * bs]
                local = self.dist.shard(indices)
                s_t0 = time.time()
                self.optimizer.zero_grad(set_to_none=True)
                batch = self.batch(local, epoch)
                losses = self.method.training_step(batch)
                dist_utils.average_gradients(self.params, self.dist)
                self.optimizer.step()
                loss_val = float(losses["loss"])
                if not math.isfinite(loss_val):
                    raise JobError(f"loss became {loss_val} at epoch {epoch + 1}, step {step}: lower the learning rate")
                ep_loss += loss_val * len(local)
                ep_correct += int((batch.logits.argmax(1) == batch.labels).sum())
                ep_seen += len(local)
                if step % cfg.log_every == 0 or step == self.steps_per_epoch - 1:
                    self.emit(StepEvent(epoch=epoch, step=step, global_step=gstep + 1, total_steps=self.total_steps,
                                        lr=lr, samples_per_s=len(indices) / max(1e-9, time.time() - s_t0),
                                        train_acc=ep_correct / max(1, ep_seen), elapsed=time.time() - t_begin,
                                        losses={k: float(v) for k, v in losses.items()}))
            dist_utils.broadcast_buffers(self.model, self.dist)
            ep_time = time.time() - ep_t0
            s.step, s.metrics, s.new_best = self.steps_per_epoch, {}, False
            self.callbacks.call("on_evaluate", self, epoch)
            row = EpochEvent(epoch=epoch, epochs=cfg.epochs, lr=self.lr_at((epoch + 1) * self.steps_per_epoch - 1),
                             train_loss=ep_loss / max(1, ep_seen), train_acc=ep_correct / max(1, ep_seen),
                             val_oa=s.metrics.get("oa"), val_macc=s.metrics.get("macc"), best_oa=s.best_oa,
                             epoch_time=ep_time, samples_per_s=ep_seen * self.dist.world_size / max(1e-9, ep_time),
                             elapsed=time.time() - t_begin)
            s.history.append(row.payload())
            s.elapsed = time.time() - t_begin
            s.epoch, s.step, s.perm = epoch + 1, 0, None
            self.emit(row)
            dist_utils.barrier(self.dist)
        return self._finish()

    def _finish(self) -> dict:
        in_sync = dist_utils.params_in_sync(self.model, self.dist)
        if not self.dist.is_main:
            return {}
        final = self.exportable(self.method.eval_model()).eval()
        metrics = self.evaluate(final)
        report = {
            "job": self.job,
            "model": final.model_config.to_dict(),
            "oa": metrics["oa"],
            "macc": metrics["macc"],
            "n": metrics["n"],
            "best_oa": self.state.best_oa,
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
            "train_time_s": self.state.elapsed,
            "world_size": self.dist.world_size,
            "ranks_in_sync": in_sync,
            "history": self.state.history,
            "version": __version__,
        }
        self.callbacks.call("on_fit_end", self, final, report)
        self.emit(EndEvent(oa=report["oa"], macc=report["macc"], params=report["params"], macs=report["macs"],
                           checkpoint=report.get("checkpoint", ""), run_dir=str(self.run_dir)))
        return report


# -- any job, and the T3DNet pipeline -------------------------------------------------------------


def run_job(cfg: JobConfig, run_dir: str | Path, sink: Callable[[Event], None] | None = None,
            cancel: threading.Event | None = None, resume: bool = False, callbacks: list[Callback] | tuple = ()) -> dict:
    """Run any job in ``run_dir``; ``callbacks`` (and ``sink``) see every stage's events, and with
    ``cfg.tensorboard`` a :class:`~core.engine.callbacks.TensorBoard` logger writes ``run_dir/tensorboard``.
    A pipeline (``t3dnet``: NetAug, then distillation from stage 1's student) runs each stage in its
    own subfolder and announces it with a :class:`StageEvent`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "job.yaml").write_text(cfg.to_yaml())
    callbacks = [*callbacks, *([Sink(sink)] if sink else [])]
    if cfg.tensorboard:
        callbacks.append(TensorBoard(run_dir / "tensorboard"))
    method = METHODS[cfg.job]
    if not method.is_pipeline:
        return Trainer(cfg, run_dir, cancel=cancel, callbacks=callbacks).fit(resume)
    announce = CallbackList(callbacks if dist_utils.DistInfo.from_env().is_main else [])
    (augment, distill), of = method.stages, len(method.stages)
    stage1_dir, stage2_dir = run_dir / method.stage_dir(1), run_dir / method.stage_dir(2)
    kd_epochs = cfg.kd_epochs or cfg.epochs
    if not (stage1_dir / "report.json").is_file():
        announce.emit(None, StageEvent(stage=augment, index=1, of=of, epoch_offset=0))
        s1 = cfg.to_dict() | {"job": augment}
        if cfg.stage_schedule == "continuous":
            s1 |= {"schedule_epochs": cfg.epochs + kd_epochs, "schedule_offset": 0}
        s1 = config_from_dict(s1)
        Trainer(s1, stage1_dir, cancel=cancel, callbacks=callbacks, job_dir=run_dir).fit(resume)
    announce.emit(None, StageEvent(stage=distill, index=2, of=of, epoch_offset=cfg.epochs))
    d2 = cfg.to_dict()
    d2["job"] = distill
    d2["epochs"] = kd_epochs
    d2["init"] = str(stage1_dir / "student.pt")
    if cfg.stage_schedule == "continuous":
        d2["schedule_epochs"], d2["schedule_offset"] = cfg.epochs + kd_epochs, cfg.epochs
    report = Trainer(config_from_dict(d2), stage2_dir, cancel=cancel, callbacks=callbacks, job_dir=run_dir).fit(resume)
    if report:
        report = dict(report, job=cfg.job, stages=[str(stage1_dir), str(stage2_dir)])
        write_report(run_dir, report)
        shutil.copyfile(stage2_dir / "student.pt", run_dir / "student.pt")
    return report


def resume_run(run_dir: str | Path, sink: Callable[[Event], None] | None = None,
               cancel: threading.Event | None = None, callbacks: list[Callback] | tuple = ()) -> dict:
    """Continue a run directory where it stopped (its own saved configuration)."""
    run_dir = Path(run_dir)
    path = run_dir / "job.yaml"
    if not path.is_file():
        raise JobError(f"{run_dir}: not a run directory (no job.yaml)")
    cfg = config_from_dict(yaml.safe_load(path.read_text()))
    return run_job(cfg, run_dir, sink, cancel, resume=True, callbacks=callbacks)


# -- small helpers ------------------------------------------------------------------------------


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
