"""Trajectory distillation: the targets and the optimisation step of ``cwdm distill``.

The method (Luhman & Luhman 2021, "Knowledge distillation in iterative generative models for
improved sampling speed", with two jumps written the way progressive distillation, Salimans & Ho
2022, writes its targets): the student learns the teacher's *deterministic* DDIM map from noise to
sample, so that ``K`` network calls from the same noise ``z`` land where the teacher's ``N`` calls
land. Different ``z`` still give different samples (the variety of the teacher's), unlike the
one-call ``regression`` sampler, whose x0 prediction from noise is the conditional mean.

One step, for a batch of conditions (the target volumes are not used):

1. ``z ~ N(0, I)`` of shape (B, 8, d, h, w) from the step's generator (kept in checkpoints, so a
   resumed run draws what the uninterrupted one would);
2. under ``no_grad`` the teacher runs the ``ddim`` sampler (eta 0; x0 clipped in image space, as
   ``cwdm sample`` does by default) from ``x_T = z`` over :func:`teacher_timesteps` (``N`` calls, the
   ``ddim`` sampler's timesteps with the student's put in), keeping its states at the student's
   timesteps;
3. the student makes its ``K`` calls at :func:`student_timesteps` (those of
   :data:`STUDENT_SAMPLER` with ``K`` steps, so sampling the student is that sampler with ``K``
   steps). Call ``k`` takes the teacher's state ``x_{t_k}`` (``z`` for the first) and is trained
   towards the x0 for which one DDIM step from ``t_k`` lands exactly on the teacher's state at
   ``t_{k+1}`` (:func:`ddim_x0_target`); the last call towards the teacher's final x0;
4. the loss is the mean over the 8 subbands of the MSE between the student's x0 estimate (the
   network's output read with the teacher's prediction parameterization, not clipped) and the
   targets; AdamW and EMA as in training (:func:`cwdm.training.loop.optimizer_step`).

With ``K = N`` and a student identical to an unclipped teacher the targets are the student's own
outputs (the loss is 0): the construction is exact.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch

from ..data.unified import condition_input
from ..errors import CwdmError
from ..model.diffusion import Denoiser, linear_schedule, make_denoiser
from ..model.prediction import X0, Prediction
from ..model.samplers import ddim, get_sampler
from ..model.wavelet import NUM_SUBBANDS
from ..runtime import autocast
from .loop import optimizer_step
from .state import TrainingParts

STUDENT_SAMPLER = "ddim_trailing"
"""The sampler a student is trained for and records: ``K`` steps visit 999 (and 499 for ``K = 2``)."""
TEACHER_SAMPLER = "ddim"
"""The teacher's deterministic sampler whose map from noise to sample the student learns."""
STUDENT_STEPS = (1, 2)
"""The network calls a student may make."""


def student_timesteps(steps: int) -> List[int]:
    """The model timesteps of the student's ``steps`` calls, decreasing (those of :data:`STUDENT_SAMPLER`)."""
    return get_sampler(STUDENT_SAMPLER).timesteps(steps)


def teacher_timesteps(student: Sequence[int], steps: int) -> List[int]:
    """The teacher's ``steps`` DDIM timesteps, decreasing: the ``ddim`` sampler's, each student timestep
    put in place of the nearest (the earlier on a tie), so the teacher's trajectory passes through every
    state the student starts a call from. With one student call (t = 999) they are the ``ddim``
    sampler's own.

    Raises:
        CwdmError: ``steps`` too few for the student's timesteps to take distinct places.
    """
    chosen = list(get_sampler(TEACHER_SAMPLER).timesteps(steps))
    for t in student:
        nearest = min(range(len(chosen)), key=lambda i: (abs(chosen[i] - int(t)), i))
        chosen[nearest] = int(t)
    if any(a <= b for a, b in zip(chosen, chosen[1:])) or not set(map(int, student)) <= set(chosen):
        raise CwdmError(f"--teacher_steps {steps}: too few teacher steps to pass through the student's "
                        f"timesteps {list(student)}")
    return chosen


def ddim_coefficients(t: int, s: int) -> Tuple[float, float]:
    """``(c, d)`` with ``x_s = c x_t + d x0`` for one deterministic DDIM step from timestep ``t`` to ``s``
    of the trained schedule: ``c = sqrt((1 - a_s) / (1 - a_t))``, ``d = sqrt(a_s) - c sqrt(a_t)`` (float64)."""
    abar = linear_schedule().alphas_cumprod
    a_t, a_s = float(abar[int(t)]), float(abar[int(s)])
    c = np.sqrt((1.0 - a_s) / (1.0 - a_t))
    return float(c), float(np.sqrt(a_s) - c * np.sqrt(a_t))


def ddim_x0_target(x_t: torch.Tensor, x_s: torch.Tensor, t: int, s: int) -> torch.Tensor:
    """The x0 for which one deterministic DDIM step from ``x_t`` at timestep ``t`` lands on ``x_s`` at ``s < t``.

    The step ``x_s = sqrt(a_s) x0 + sqrt(1 - a_s) (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)`` is linear in
    x0 (:func:`ddim_coefficients`), so ``x0 = (x_s - c x_t) / d``.

    Args:
        x_t, x_s: (B, 8, d, h, w) states.

    Returns:
        (B, 8, d, h, w) in ``x_t``'s dtype.
    """
    if not int(s) < int(t):
        raise ValueError(f"a DDIM step goes to an earlier timestep, got {t} -> {s}")
    c, d = ddim_coefficients(t, s)
    return (x_s - c * x_t) / d


def trajectory_targets(teacher: Denoiser, z: torch.Tensor, student: Sequence[int], teacher_ts: Sequence[int]
                       ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Run the teacher's DDIM from ``z`` and return the student's inputs and x0 targets, one per call.

    Args:
        teacher: the teacher's denoiser ``(x_t, t) -> x0``.
        z: (B, 8, d, h, w) the start at ``teacher_ts[0]``, which must be ``student[0]``.
        student: the student's timesteps, decreasing; each one of ``teacher_ts``.
        teacher_ts: the teacher's timesteps (:func:`teacher_timesteps`).

    Returns:
        ``(inputs, targets)``: K tensors (B, 8, d, h, w) each; ``inputs[k]`` the teacher's state at
        ``student[k]``, ``targets[k]`` the x0 whose DDIM step from there lands on ``inputs[k + 1]``, the
        last one the teacher's final x0.
    """
    student, teacher_ts = [int(t) for t in student], [int(t) for t in teacher_ts]
    if teacher_ts[0] != student[0] or not set(student) <= set(teacher_ts):
        raise ValueError(f"the teacher's timesteps {teacher_ts} do not pass through the student's {student}")
    states = {teacher_ts[0]: z}

    def keep(info) -> None:
        i = info["i"]
        if i + 1 < len(teacher_ts) and teacher_ts[i + 1] in student:
            states[teacher_ts[i + 1]] = info["x"]

    final = ddim(teacher, z, teacher_ts, callback=keep)
    inputs = [states[t] for t in student]
    targets = [ddim_x0_target(inputs[k], inputs[k + 1], student[k], student[k + 1]) for k in range(len(student) - 1)]
    return inputs, targets + [final]


def student_loss(net: torch.nn.Module, cond: torch.Tensor, inputs: Sequence[torch.Tensor],
                 targets: Sequence[torch.Tensor], student: Sequence[int], prediction: Prediction = X0
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The student's K calls as one batch, and the MSE of its x0 estimates against the targets.

    Args:
        net: the student network.
        cond: (B, 8C [+ M], d, h, w) condition subbands.
        inputs, targets: K tensors (B, 8, d, h, w) each (:func:`trajectory_targets`).
        student: the K timesteps of the calls.
        prediction: what the network's output means (the teacher's; no clipping here).

    Returns:
        ``(loss (), per_subband (8,), x0 estimates (K B, 8, d, h, w))``, call after call; loss is the mean
        of the 8 per-subband mean squared errors.
    """
    b = cond.shape[0]
    x = torch.cat(list(inputs))
    t = torch.cat([torch.full((b,), int(s), dtype=torch.long, device=x.device) for s in student])
    x0 = make_denoiser(net, cond.repeat(len(student), 1, 1, 1, 1), clip=False, prediction=prediction)(x, t)
    per_subband = ((x0.float() - torch.cat(list(targets)).float()) ** 2).mean(dim=(0, 2, 3, 4))
    return per_subband.mean(), per_subband, x0


class DistillStep:
    """The optimisation step of a distillation run, called by the training loop as
    :func:`cwdm.training.loop.train_step` is (the target volumes and ``timestep_power`` are unused).

    Args:
        teacher: the teacher network; kept frozen and in eval mode, moved to the batch's device.
        prediction: the teacher's (and student's) output parameterization.
        student_steps: K, the student's network calls (:data:`STUDENT_STEPS`).
        teacher_steps: N, the teacher's DDIM calls (>= K).
        clip: clip the teacher's x0 predictions in image space (``cwdm sample``'s default).
    """

    def __init__(self, teacher: torch.nn.Module, prediction: Prediction, student_steps: int, teacher_steps: int,
                 clip: bool = True):
        self.teacher = teacher.eval().requires_grad_(False)
        self.prediction, self.clip = prediction, clip
        self.student = student_timesteps(student_steps)
        self.teacher_ts = teacher_timesteps(self.student, teacher_steps)

    def targets(self, cond: torch.Tensor, generator: torch.Generator, bf16: bool = True
                ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Draw ``z`` (B, 8, d, h, w) from ``generator`` and run the teacher (:func:`trajectory_targets`)
        for the condition subbands ``cond`` (B, 8C [+ M], d, h, w)."""
        device = cond.device
        z = torch.randn((cond.shape[0], NUM_SUBBANDS, *cond.shape[2:]), device=device, generator=generator)
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        with torch.no_grad(), autocast(device, bf16):
            denoiser = make_denoiser(self.teacher, cond, clip=self.clip, prediction=self.prediction)
            return trajectory_targets(denoiser, z, self.student, self.teacher_ts)

    def __call__(self, parts: TrainingParts, schedule, target: torch.Tensor, cond: torch.Tensor, bf16: bool = True,
                 layout: torch.memory_format = torch.contiguous_format, lr=None, identity=None, **unused):
        """One step on a batch of conditions ``cond`` (B, C, X, Y, Z) (``identity`` (B, M) for a unified
        teacher); returns ``(loss (), per_subband (8,), the last call's x0 estimate (B, 8, X/2, Y/2, Z/2))``."""
        c = condition_input(cond, identity).contiguous(memory_format=layout)
        inputs, targets = self.targets(c, parts.generator, bf16)
        with autocast(cond.device, bf16):
            loss, per_subband, x0 = student_loss(parts.net, c, inputs, targets, self.student, self.prediction)
        optimizer_step(parts, loss, lr)
        return loss, per_subband, x0[-c.shape[0]:]
