"""Planning a region task's run (inpainting, tumour insertion) on a :class:`cwdm.inference.pipeline.Pipeline`.

A region task's checkpoint (key ``t1n``) fills a region of one scan per case. What differs between
the tasks (their layout, checks and result names) is a :class:`RegionTask`, defined beside each task's
reading and writing (:data:`cwdm.inference.inpaint.INPAINTING`, :data:`cwdm.inference.insert.INSERTION`);
what they share is here: the checkpoint loaded once and refused unless it is of the task
(:func:`region_model`), a folder's plan (:func:`plan_region_folder`: ``cwdm sample`` and ``infer_batch``)
and one case's plan (:func:`plan_region_case`: ``infer_single``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

from ..errors import CwdmError
from .completion import check_case_folders, completion_paths
from .steps import Paths, model_grid

KEY = "t1n"
"""The pipeline's checkpoint key of a region task's model."""


@dataclass(frozen=True)
class RegionTask:
    """What a region task gives the planning.

    Attributes:
        name: the task's name in messages (``inpainting``).
        flag: the training flag of its checkpoints (``--inpainting True``).
        is_task: whether a checkpoint's :class:`cwdm.task.Task` is of this task.
        grid_part: the case part whose shape gives the network grid.
        usable: ``(loaded model, data folder, report) -> cases``: the folder's cases that can be done, in
            order; ``report`` gets ``skipping <case>: <problem>`` for each other one.
        problems: ``(case, loaded model) -> lines``: why one case cannot be done (empty when it can).
        paths: ``(case, output folder or None) -> Paths``: where a folder run writes a case.
    """

    name: str
    flag: str
    is_task: Callable[[Any], bool]
    grid_part: str
    usable: Callable[[Any, Path, Callable[[str], None]], List[Any]]
    problems: Callable[[Any, Any], List[str]]
    paths: Callable[[Any, Optional[Path]], Paths]


def region_model(pipeline, kind: RegionTask):
    """The region checkpoint of ``pipeline`` (key ``t1n``), loaded once; one :class:`CwdmError` line
    unless its task is ``kind``'s. A distilled student's recorded sampler is used unless one was chosen."""
    from ..model.checkpoint import load_model

    if KEY not in pipeline.models:
        path = pipeline.checkpoints[KEY]
        loaded = load_model(path, ema=pipeline.ema, device="cpu")
        if loaded.task is None or not kind.is_task(loaded.task):
            what = loaded.task.describe() if loaded.task is not None else "with a bare state_dict's default task"
            raise CwdmError(f"{path}: not an {kind.name} checkpoint (it synthesizes {what}); train one with "
                            f"cwdm train {kind.flag}")
        pipeline.models[KEY], pipeline._paths[KEY] = loaded, Path(path)
    pipeline._use_recorded([KEY])
    return pipeline.models[KEY]


def plan_region_folder(pipeline, kind: RegionTask, data_dir: Path, output_dir: Optional[Path],
                       before: Optional[Callable[[], None]] = None, overwrite: Optional[bool] = None):
    """Plan ``kind`` on every usable case of ``data_dir`` (this rank's share): results where ``kind.paths``
    puts them under ``output_dir``, or in the case folders when ``output_dir`` is None or the data folder;
    written ones are skipped unless ``overwrite`` (default the pipeline's). ``before``: called once the
    network is ready, before the cases are read. The plan's ``problems`` are the unusable cases' lines."""
    loaded = region_model(pipeline, kind)
    target = loaded.task.target
    overwrite = pipeline.overwrite if overwrite is None else overwrite
    pipeline._synth(target, 1)
    if before is not None:
        before()
    in_place = output_dir is None or Path(output_dir).resolve() == Path(data_dir).resolve()
    out = None if in_place else Path(output_dir)
    problems: List[str] = []
    cases = kind.usable(loaded, Path(data_dir), lambda line: (problems.append(line), pipeline.say(line)))
    if in_place:
        check_case_folders({(target, target): cases})
    record = pipeline._record(Path(data_dir) if in_place else out, [target], in_place=in_place, inputs=False,
                              redo=overwrite)
    cases = cases[pipeline.rank::pipeline.world_size]
    mine = [c for c in cases if overwrite or not kind.paths(c, out)["volume"].exists()]
    plan = _plan(pipeline, kind, mine, lambda case, mod: kind.paths(case, out), record, len(cases), len(problems),
                 overwrite)
    plan.problems = problems
    return plan


def plan_region_case(pipeline, kind: RegionTask, case, output_file: Path, overwrite: bool = False):
    """Plan ``kind`` on one case (checked first: a problem is one :class:`CwdmError` line) into
    ``output_file`` (its std map beside it), recorded in its folder."""
    loaded = region_model(pipeline, kind)
    for line in kind.problems(case, loaded):
        raise CwdmError(line)
    record = pipeline._record(Path(output_file).parent, [loaded.task.target], in_place=False, inputs=False,
                              redo=False)
    return _plan(pipeline, kind, [case], lambda c, m: completion_paths(Path(output_file)), record, 1, 0, overwrite)


def _plan(pipeline, kind: RegionTask, cases: list, destination, record, count: int, unusable: int,
          overwrite: bool):
    """The :class:`~cwdm.inference.pipeline.Plan` of a run of ``cases`` (checked already)."""
    from .pipeline import Plan

    loaded = region_model(pipeline, kind)
    target = loaded.task.target
    out = Plan({(target, target): cases} if cases else {}, destination, record, count, count - len(cases),
               unusable, checked=True, inputs=False, overwrite=overwrite)
    if cases:
        out.grid = model_grid(cases[0], kind.grid_part, loaded.config.image_divisor)
        out.compiling = pipeline._synth(target, len(cases)).compiles(out.grid)
    return out
