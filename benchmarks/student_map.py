#!/usr/bin/env python
"""Does a distilled student reproduce its teacher's sample-to-sample variation? (a diagnostic, not a test)

    python benchmarks/student_map.py TEACHER K=STUDENT [K=STUDENT ...] [--cases 64 65 66 67] [--members 6]

For held-out cases of the ambiguous phantom (seed 0, downsample 4; t1c from t1n, t2w, t2f) it draws
``--members`` noise volumes z and synthesizes each with the teacher's deterministic ddim 10 (the map
``cwdm distill --teacher_steps 10`` trains the students on) and with each K-call student
(``ddim_trailing K``) from the same z. Around each ensemble's mean it prints, inside t1c's detail and
elsewhere in the brain:

* ``corr``: correlation of the student's deviation with the teacher's (1: same direction per z);
* ``amplitude``: RMS of the student's deviations over RMS of the teacher's (1: the same spread);
* ``R2``: 1 - mean squared difference of the deviations / mean squared teacher deviation.

A student that learned the map but shrinks towards the mean, as an MSE fit of what it cannot
predict exactly does, shows a high ``corr`` and an ``amplitude`` below 1. For a 2-call student a
second row, calls "2 from teacher", starts its second call from the teacher's own state at t = 499
(as in training), so a shortfall of the first jump and one of the second call can be told apart.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from cwdm.data.preprocess import grid_for, prepare_volume
from cwdm.model.checkpoint import load_model
from cwdm.model.diffusion import make_denoiser
from cwdm.model.samplers import NoiseSource, run_sampler
from cwdm.model.wavelet import from_subbands, to_subbands
from cwdm.phantom.anatomy import generate_case
from cwdm.training.distill import student_timesteps, teacher_timesteps, trajectory_targets


def generators(members: int, seed: int) -> list:
    """One Generator per ensemble member, member m seeded ``seed + m``."""
    return [torch.Generator().manual_seed(seed + m) for m in range(members)]


def samples(model, cond, sampler: str, steps: int, members: int, seed: int) -> torch.Tensor:
    """(members, X, Y, Z) syntheses on the model grid in [0, 1], member m from noise seed ``seed + m``."""
    shape = (members, 8, *cond.shape[2:])
    den = make_denoiser(model.model, cond.expand(members, -1, -1, -1, -1), prediction=model.prediction)
    with torch.no_grad():
        return from_subbands(run_sampler(sampler, den, shape, generators(members, seed), steps))[:, 0].clamp(0, 1)


def second_call_from_teacher(teacher, student, cond, members: int, seed: int) -> torch.Tensor:
    """(members, X, Y, Z) a 2-call student's second call from the teacher's ddim 10 state at its second
    timestep, from the start :func:`samples` draws (the first draw of the same noise source)."""
    z = NoiseSource((members, 8, *cond.shape[2:]), generators(members, seed))()
    cond = cond.expand(members, -1, -1, -1, -1)
    calls = student_timesteps(2)
    with torch.no_grad():
        inputs, _ = trajectory_targets(make_denoiser(teacher.model, cond, prediction=teacher.prediction), z, calls,
                                       teacher_timesteps(calls, 10))
        x0 = make_denoiser(student.model, cond, prediction=student.prediction)(inputs[1],
                                                                               torch.full((members,), calls[1]))
        return from_subbands(x0)[:, 0].clamp(0, 1)


def compare(teacher: torch.Tensor, student: torch.Tensor, mask: torch.Tensor) -> dict:
    """corr, amplitude and R2 of the student's deviations from its ensemble mean against the teacher's."""
    dt, ds = (teacher - teacher.mean(0))[:, mask], (student - student.mean(0))[:, mask]
    tt, ss = (dt ** 2).mean(), (ds ** 2).mean()
    return {"corr": float((dt * ds).mean() / (tt * ss).sqrt()), "amplitude": float((ss / tt).sqrt()),
            "R2": float(1 - ((dt - ds) ** 2).mean() / tt)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("teacher")
    p.add_argument("students", nargs="+", metavar="K=STUDENT")
    p.add_argument("--cases", type=int, nargs="+", default=[64, 65, 66, 67])
    p.add_argument("--members", type=int, default=6)
    p.add_argument("--seed", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    teacher = load_model(a.teacher)
    students = [(int(k), load_model(path)) for k, path in (s.split("=", 1) for s in a.students)]
    print("| case | student calls | region | corr | amplitude | R2 |\n|---|---|---|---|---|---|")
    for index in a.cases:
        case = generate_case(0, index, 4, ambiguous=True)
        grid = grid_for(case["t1c"].shape, teacher.config.image_divisor)

        def volume(key):
            return torch.from_numpy(prepare_volume(case[key].astype(np.float64), grid))[None, None]

        def mask(values):
            return torch.from_numpy(grid.to_model(values.astype(np.float32)) > 0.5)

        cond = torch.cat([to_subbands(volume(c)) for c in ("t1n", "t2w", "t2f")], 1)
        detail, brain = mask(case["details"]["t1c"]), mask(case["t1c"] != 0)
        reference = samples(teacher, cond, "ddim", 10, a.members, a.seed)
        for steps, student in students:
            rows = [(str(steps), samples(student, cond, "ddim_trailing", steps, a.members, a.seed))]
            if steps == 2:
                rows.append(("2 from teacher", second_call_from_teacher(teacher, student, cond, a.members, a.seed)))
            for calls, mine in rows:
                for region, m in (("detail", detail), ("elsewhere", brain & ~detail)):
                    r = compare(reference, mine, m)
                    print(f"| {index} | {calls} | {region} | {r['corr']:.2f} | {r['amplitude']:.2f} | {r['R2']:.2f} |",
                          flush=True)


if __name__ == "__main__":
    main()
