"""The report of ``cwdm demo``: the verdict sentence, ``report.md`` and ``summary.json``.

:func:`verdict_sentence` words the comparison of cwdm with the baseline for
any combination of wins and losses; :func:`cut_short_note` says, when
``--max_minutes`` stopped training before ``--max_steps``, that the verdict
means nothing and how many steps were trained; :func:`write_report` writes
both files atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

# the three comparisons of the verdict, in the order the sentence names them
VERDICT_LABELS = (("ssim", "SSIM"), ("mae_tumor", "MAE inside the tumour"),
                  ("mae_non_tumor", "MAE outside the tumour"))


def verdicts(cwdm: Dict[str, float], baseline: Dict[str, float]) -> Dict[str, bool]:
    """Whether cwdm beats the baseline: higher SSIM, lower MAE inside / outside the tumour."""
    return {"ssim": cwdm["ssim"] > baseline["ssim"],
            "mae_tumor": cwdm.get("mae_tumor", 1.0) < baseline.get("mae_tumor", 0.0),
            "mae_non_tumor": cwdm.get("mae_non_tumor", 1.0) < baseline.get("mae_non_tumor", 0.0)}


def _join(items: List[str], word: str) -> str:
    """``a``, ``a and b``, ``a, b and c`` (or with ``or``)."""
    if len(items) <= 2:
        return f" {word} ".join(items)
    return ", ".join(items[:-1]) + f" {word} " + items[-1]


def verdict_sentence(beats: Dict[str, bool]) -> str:
    """One grammatical sentence for the 8 combinations of :func:`verdicts`' results."""
    wins = [label for key, label in VERDICT_LABELS if beats[key]]
    losses = [label for key, label in VERDICT_LABELS if not beats[key]]
    if not losses:
        return f"cwdm beats the baseline on {_join(wins, 'and')}."
    if not wins:
        return f"cwdm does NOT beat the baseline on {_join(losses, 'or')}."
    return f"cwdm beats the baseline on {_join(wins, 'and')}, but NOT on {_join(losses, 'or')}."


def cut_short_note(steps_done: int, planned: int, minutes: float) -> str:
    """The line of a report whose training ``--max_minutes`` stopped before ``--max_steps``."""
    return (f"**Training was CUT SHORT** by --max_minutes {minutes:g} after {steps_done} of {planned} steps: "
            f"the network is undertrained, so the comparison below means nothing about cwdm. "
            f"Rerun the command to continue training (without --max_minutes it goes on to {planned} steps).")


def write_report(out: Path, cfg, summary: dict) -> None:
    """``report.md`` (table, verdict, montage, timings) and ``summary.json`` in ``out``, atomically."""
    from ..writes import atomic_write

    nan = float("nan")
    rows = [("cwdm (" + summary["sampler"] + " calls)", summary["cwdm"]),
            ("linear regression baseline", summary["baseline"])]
    trained = f"{summary['train_steps']} training steps ({summary['seconds']['training']:.0f} s on this machine)"
    cut = summary["cut_by_time_cap"]
    if cut:
        trained += f", CUT SHORT before the planned {summary['planned_steps']}"
    lines = [f"# cwdm demo: synthesizing {cfg.target} from the other three contrasts", "",
             f"{cfg.train_cases} training and {cfg.test_cases} held-out BraTS-like phantom cases "
             f"(downsample {cfg.downsample}); {trained}.", ""]
    if cut:
        lines += [cut_short_note(summary["train_steps"], summary["planned_steps"], cfg.max_minutes), ""]
    lines += ["| method | SSIM | SSIM tumour | SSIM non-tumour | PSNR (dB) | MSE | MAE tumour | "
              "MAE brain outside tumour |", "|---|---|---|---|---|---|---|---|"]
    for name, m in rows:
        lines.append(f"| {name} | {m.get('ssim', nan):.4f} | {m.get('ssim_tumor', nan):.4f} | "
                     f"{m.get('ssim_non_tumor', nan):.4f} | {m.get('psnr', nan):.2f} | {m.get('mse', nan):.5f} | "
                     f"{m.get('mae_tumor', nan):.4f} | {m.get('mae_non_tumor', nan):.4f} |")
    verdict = verdict_sentence(summary["cwdm_beats_baseline"])
    if cut:
        verdict = f"Verdict (meaningless: training cut short at step {summary['train_steps']}): {verdict}"
    lines += ["", "SSIM columns: the BraSyn challenge's definitions; PSNR / MSE / MAE: the target's 0.5/99.5 % "
              "percentile scale, over the brain (MAE tumour: seg > 0; outside: brain without the tumour).", "",
              verdict, "", "Per-case metrics: `evaluation/cwdm/metrics.csv`, `evaluation/baseline/metrics.csv`.", ""]
    if summary.get("montage"):
        lines += [f"![montage]({summary['montage']})", ""]
    lines += ["Timings (s): " + ", ".join(f"{k} {t}" for k, t in summary["seconds"].items()), ""]
    with atomic_write(out / "report.md") as fh:
        fh.write("\n".join(lines))
    with atomic_write(out / "summary.json") as fh:
        json.dump(summary, fh, indent=2)
