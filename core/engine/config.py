"""Typed job configuration, YAML loading (``safe_load`` only) and presets.

Unknown keys, wrong types and impossible values are errors with the offending key named.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from core.data.augment import TrainingAugmentation

from .jobs import JOBS, METHODS

#: ``auto``: bf16 autocast where the hardware computes bf16 natively (a CUDA GPU that supports it, a CPU
#: with AVX-512 BF16 or AMX), else fp32 (on an AVX2 CPU emulated bf16 is about 3x slower than fp32).
PRECISIONS = ("fp32", "bf16", "auto")


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """The precision a job runs at on ``device``: ``auto`` decided for this machine."""
    if precision != "auto":
        return precision
    if str(device).startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    from core.engine.machine import native_bf16

    return "bf16" if native_bf16() else "fp32"


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the key."""


@dataclass
class AugmentConfig:
    """Geometric training augmentation, applied after sampling/grouping indices are chosen."""

    scale_low: float = 0.8
    scale_high: float = 1.25
    anisotropic: bool = True
    shift: float = 0.1
    jitter: float = 0.0
    rotate_up: bool = False
    # Single-viewpoint partial views (core/data/partial.py): this share of the training samples is
    # replaced by a partial view at a severity drawn uniformly in ``partial_severity`` (1 mild .. 3
    # hard). With cached indices (grouping_variants or distill.cache_views > 0) each cached variant
    # is one fixed draw per shape; otherwise every batch draws afresh.
    partial_prob: float = 0.0
    partial_severity: tuple[float, ...] = (1.0, 3.0)


@dataclass
class NetAugConfig:
    """Network augmentation (Cai et al., ICLR 2022), stage 1 of T3DNet."""

    aug_factors: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0)
    aug_weight: float = 1.0
    stop_fraction: float = 0.5  # augmentation off for this last fraction of the epochs
    sort_channels: bool = True
    bn_batches: int = 20  # batches used to re-estimate BN statistics before evaluation


@dataclass
class DistillConfig:
    """Teacher supervision: Hinton KD, FitNet feature loss, deep mutual learning."""

    teacher: str = ""  # checkpoint path
    temperature: float = 4.0
    alpha: float = 0.9
    feature_weight: float = 1.0  # fitnet
    cache_views: int = 0  # >0: teacher outputs for this many fixed augmented views per shape


@dataclass
class JobConfig:
    """One compression or training job."""

    job: str = "train"
    model: str = "pointnet2_ssg"
    width: float = 1.0
    data: str = ""
    num_points: int = 1024
    epochs: int = 1
    kd_epochs: int = 0  # t3dnet: epochs of the distillation stage (0 = same as epochs)
    # t3dnet: "continuous" runs both stages on one cosine schedule of epochs + kd_epochs (stage 2
    # continues where stage 1 stopped); "restart" gives each stage its own full schedule.
    stage_schedule: str = "continuous"
    schedule_epochs: int = 0  # length of the cosine schedule in epochs (0: epochs)
    schedule_offset: int = 0  # epochs of that schedule already run before this job (a later stage)
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: int = 0
    label_smoothing: float = 0.2
    precision: str = "fp32"
    threads: int = 0  # 0: torch's default
    seed: int = 0
    grouping_variants: int = 4  # cached sampling/grouping index sets per shape (0: recompute)
    dropout: float | None = None  # classifier-head dropout; None: the architecture's default
    limit_train: int = 0  # >0: use only this many training shapes (tests, smoke runs)
    limit_test: int = 0
    eval_every: int = 1
    log_every: int = 10
    tensorboard: bool = False  # also write the curves for TensorBoard (RUN_DIR/tensorboard/)
    device: str = "auto"
    # Initial weights (a checkpoint of the same model, width and classes): the T3DNet distillation
    # stage starts from stage 1's student; a train job started from a trained model fine-tunes it.
    init: str = ""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    netaug: NetAugConfig = field(default_factory=NetAugConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        """The job file: every key, defaults filled in (what a run folder's ``job.yaml`` holds)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def validate(self) -> "JobConfig":
        if self.job not in JOBS:
            raise ConfigError(f"job: unknown job {self.job!r} (one of {', '.join(JOBS)})")
        from core.models import list_models

        if self.model not in list_models():
            raise ConfigError(f"model: unknown model {self.model!r} (one of {', '.join(list_models())})")
        checks = [
            ("width", self.width > 0, "must be positive"),
            ("epochs", self.epochs >= 1, "must be at least 1"),
            ("batch_size", self.batch_size >= 2, "must be at least 2 (BatchNorm)"),
            ("lr", self.lr > 0, "must be positive"),
            ("num_points", self.num_points >= 32, "must be at least 32"),
            ("optimizer", self.optimizer in ("adamw", "adam", "sgd"), "must be adamw, adam or sgd"),
            ("precision", self.precision in PRECISIONS, "must be fp32, bf16 or auto"),
            ("stage_schedule", self.stage_schedule in ("continuous", "restart"), "must be continuous or restart"),
            ("schedule_offset", self.schedule_offset >= 0, "must be at least 0"),
            ("schedule_epochs", self.schedule_epochs == 0 or self.schedule_epochs >= self.schedule_offset + self.epochs,
             "must be 0 or at least schedule_offset + epochs"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "must be in [0, 1)"),
            ("dropout", self.dropout is None or 0 <= self.dropout < 1, "must be in [0, 1) or null"),
            ("distill.alpha", 0 <= self.distill.alpha <= 1, "must be in [0, 1]"),
            ("distill.temperature", self.distill.temperature > 0, "must be positive"),
            ("netaug.stop_fraction", 0 <= self.netaug.stop_fraction <= 1, "must be in [0, 1]"),
            ("augment.scale_low", 0 < self.augment.scale_low <= self.augment.scale_high, "must be in (0, scale_high]"),
            ("augment.partial_prob", 0 <= self.augment.partial_prob <= 1, "must be in [0, 1]"),
            ("augment.partial_severity", len(self.augment.partial_severity) == 2
             and 1 <= self.augment.partial_severity[0] <= self.augment.partial_severity[1] <= 3,
             "must be [low, high] with 1 <= low <= high <= 3"),
        ]
        for key, ok, msg in checks:
            if not ok:
                raise ConfigError(f"{key}: {msg}")
        method = METHODS[self.job]
        if self.init and not method.accepts_init:
            takes = [n for n, m in METHODS.items() if m.accepts_init]
            raise ConfigError(f"init: job {self.job!r} trains a weight-sharing supernet from scratch; init is for "
                              f"{', '.join(takes[:-1])} and {takes[-1]}")
        uncacheable = TrainingAugmentation.from_config(self.augment).uncacheable()
        if method.needs_teacher and self.distill.cache_views > 0 and uncacheable:
            asked = " and ".join(f"augment.{k}" for k in uncacheable)
            raise ConfigError(f"distill.cache_views: cached teacher views hold each view's scale, shift and partial "
                              f"view only, not {asked}; set augment.rotate_up false and augment.jitter 0, "
                              f"or distill.cache_views 0")
        if method.needs_teacher and not self.distill.teacher:
            raise ConfigError(f"distill.teacher: job {self.job!r} needs a teacher checkpoint")
        return self


def _to_plain(v):
    if isinstance(v, dict):
        return {k: _to_plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_plain(x) for x in v]
    return v


def _build(cls, data: Mapping[str, Any], prefix: str = ""):
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''}: {', '.join(prefix + u for u in unknown)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, prefix + key)
    return cls(**kwargs)


def _coerce(tp, value, key):
    args = typing.get_args(tp)
    if type(None) in args:  # Optional[X]: null, or an X
        if value is None:
            return None
        (tp,) = [a for a in args if a is not type(None)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return _build(tp, value, key + ".")
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(_coerce(inner, v, key) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


# Presets: overrides applied to the defaults before the user's own keys.
PRESETS: dict[str, dict] = {
    # The full recipe of RESEARCH.md, meant for a GPU.
    "paper": {
        "epochs": 200, "batch_size": 32, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4,
        "label_smoothing": 0.2, "precision": "fp32", "grouping_variants": 0,
        "netaug": {"stop_fraction": 0.5},
    },
    # Sized for a 2-core CPU: cached indices, bf16 matmuls where the CPU has them natively, fewer epochs. KD at T=1: our teachers are
    # trained with label smoothing 0.2, and at T=4 their soft targets are nearly uniform (mean
    # entropy 3.63 nats of a possible 3.69); measured on ModelNet40, T=1 beats T=4 by 0.3 points OA
    # and 4.4 points mAcc in the same T3DNet stage 2 (docs/RESULTS.md).
    "cpu": {
        "epochs": 40, "batch_size": 32, "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4,
        "label_smoothing": 0.2, "precision": "auto", "grouping_variants": 4,
        "distill": {"cache_views": 4, "temperature": 1.0},
    },
    # Seconds: for tests and a first look.
    "smoke": {
        "epochs": 2, "batch_size": 8, "limit_train": 64, "limit_test": 32, "lr": 2e-3,
        "precision": "fp32", "grouping_variants": 1, "log_every": 2,
        "netaug": {"bn_batches": 2, "stop_fraction": 0.5},
    },
}


def load_config(
    preset: str | None = None,
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> JobConfig:
    """Defaults (``defaults`` over the dataclass's) <- preset <- YAML file <- explicit overrides
    (``None`` values skipped), validated."""
    data: dict = dict(defaults or {})
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"preset: unknown preset {preset!r} (one of {', '.join(PRESETS)})")
        data = _merge(data, PRESETS[preset])
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({exc.__class__.__name__})") from exc
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{p}: expected a mapping of keys at the top level")
        data = _merge(data, loaded)
    if overrides:
        data = _merge(data, {k: v for k, v in overrides.items() if v is not None})
    return _build(JobConfig, data).validate()


def config_from_dict(d: Mapping[str, Any]) -> JobConfig:
    return _build(JobConfig, d).validate()
