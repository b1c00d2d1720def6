"""Losses of the compression jobs, each a documented unit tested against hand-computed values."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Hinton knowledge distillation (Hinton et al., 2015, "Distilling the Knowledge in a NN").

    ``L = (1 - a) * CE(s, y) + a * T^2 * KL(softmax(t/T) || softmax(s/T))``, the KL averaged over
    the batch (``batchmean``: summed over classes, never divided by the class count).

    Returns the total and its terms (``task_loss``, ``kd_loss``, unweighted).
    """
    ce = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    kl = kl_divergence(student_logits, teacher_logits, temperature) * temperature**2
    return (1 - alpha) * ce + alpha * kl, {"task_loss": ce.detach(), "kd_loss": kl.detach()}


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``KL(softmax(t/T) || softmax(s/T))`` summed over classes, averaged over the batch."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


def feature_loss(projected_student: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """FitNet hint loss (Romero et al., ICLR 2015): mean squared error between the projected
    student embedding and the teacher embedding, averaged over batch and channels."""
    return F.mse_loss(projected_student.float(), teacher_features.float())
