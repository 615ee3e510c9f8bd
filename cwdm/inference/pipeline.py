"""One inference pipeline for ``cwdm sample``, ``cwdm auto``, the demo and :class:`cwdm.api.MissingModality`.

A :class:`Pipeline` is built from the checkpoints, the sampler settings
(:class:`cwdm.inference.synthesis.SamplingOptions`, whose defaults, ddpm with
1000 steps as the reference, are every caller's), a device and the write
settings. A run is two calls:

* a plan: :meth:`Pipeline.paired` (``cwdm sample``: one checkpoint, the target
  of every usable case of a folder; with an inpainting or insertion checkpoint the fill of every usable
  case of a folder of that task's layout, :func:`cwdm.inference.region_plan.plan_region_folder`, and
  ``plan_region_case`` for one case of :class:`cwdm.inference.fill_api.Inpainting` or ``Insertion``),
  :meth:`Pipeline.completion` (``cwdm auto``
  and ``MissingModality.infer_batch``: whatever each case folder misses, a case
  missing several modalities with a unified checkpoint trained with dropped
  conditions, :func:`cwdm.inference.completion.plan`) or :meth:`Pipeline.one_case`
  (``infer_single``). Planning says which cases and outputs, skips done ones,
  loads every needed checkpoint and checks, before any network call, the case
  folders to write into and the output folder's provenance record (its
  settings, its writability);
* :meth:`Pipeline.run`: synthesizes and writes every planned volume within the
  record's session; a degenerate volume is reported (``say``) and not written.
  It returns a :class:`Result`.

The callers keep their flags, their own lines (:meth:`Pipeline.announce` says
the device line) and their closing lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..naming import ANY, MODALITIES
from ..errors import CwdmError, model_option
from .completion import (Group, cases_of, check_case_folders, completion_paths, output_path, plan,
                         recorded_synthesized)
from .steps import Paths, announce, model_grid, paired_paths, progress_bar, resolve_model, usable_cases
from .synthesis import SamplingOptions, Synthesizer, run_compiles

COMMANDS = ("sample", "auto", "api")
"""The names a run is recorded under in ``cwdm_provenance.json``."""


@dataclass
class Plan:
    """What one run does.

    ``groups``: (modality to synthesize, checkpoint key) -> cases (a paired plan has one group keyed by
    its target); ``destination(case, modality) -> Paths`` of each result; ``checked``: the cases were
    validated while planning (paired mode) rather than per group while running (completion); ``inputs``:
    the record lists each volume's inputs (completion); ``overwrite``: existing results are replaced.
    """

    groups: Dict[Group, list]
    destination: Callable[[object, str], Paths]
    record: Optional[object] = None
    cases: int = 0
    complete: int = 0
    unusable: int = 0
    checked: bool = False
    inputs: bool = True
    overwrite: bool = False
    grid: Optional[Tuple[int, ...]] = None
    compiling: bool = False
    problems: List[str] = field(default_factory=list)

    @property
    def todo(self) -> int:
        """Volumes to synthesize."""
        return sum(len(c) for c in self.groups.values())


@dataclass
class Result:
    """What a run did: ``written`` (case name, modality, path) per volume written, the lines of the
    cases found unusable while running and of the degenerate volumes (not written)."""

    written: List[Tuple[str, str, Path]] = field(default_factory=list)
    unusable: List[str] = field(default_factory=list)
    degenerate: List[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Cases found unusable while running plus volumes found degenerate."""
        return len(self.unusable) + len(self.degenerate)


class Pipeline:
    """Plan, check, synthesize, write and record one run.

    Args:
        checkpoints: modality (or :data:`cwdm.task.ANY`) -> checkpoint, for completion (empty for paired).
        options: sampler settings (validated here).
        device: where the networks run.
        network: network flags of a bare released state_dict (:class:`cwdm.inference.flags.ModelFlags`).
        command: ``sample``, ``auto`` or ``api``: the name in the provenance record and, for ``api``, a
            refusal of a record made with other settings in the API's words.
        modalities: modality names.
        ema: use a cwdm checkpoint's EMA weights.
        postprocess, threshold, overwrite, batch_size, num_workers: how volumes are written
            (:func:`cwdm.inference.steps.synthesize_cases`).
        progress: show progress bars (main rank only).
        say: prints one line (None: silent).
        clock_write: where :class:`cwdm.feedback.RunClock` writes its estimate (None: no clock).
        continue_anyway: add results to a folder whose recorded results were made otherwise.
        record: keep the provenance record (the demo does not).
        rank, world_size: this process's share of the cases under torchrun.
        bar: the progress bars' label (default: ``command``), followed by the modality.
        sampler_chosen: the user chose the sampler (else a plan's checkpoints that record one, distilled
            students, are sampled with it: :mod:`cwdm.inference.recorded`; ``options`` is then the plan's).
    """

    def __init__(self, checkpoints: Mapping[str, Path], options: SamplingOptions, device, network, *,
                 command: str, modalities: Sequence[str] = MODALITIES, ema: bool = True, postprocess: bool = True,
                 threshold: Optional[float] = None, overwrite: bool = False, batch_size: int = 1,
                 num_workers: int = 0, progress: bool = False, say: Optional[Callable[[str], None]] = None,
                 clock_write: Optional[Callable[[str], None]] = None, continue_anyway: bool = False,
                 record: bool = True, rank: int = 0, world_size: int = 1, bar: Optional[str] = None,
                 sampler_chosen: bool = True):
        if command not in COMMANDS:
            raise ValueError(f"command must be one of {COMMANDS}, got {command!r}")
        options.validate()
        self.checkpoints = {k: Path(p) for k, p in checkpoints.items()}
        self.options, self.device, self.network, self.command = options, device, network, command
        self.modalities, self.ema = tuple(modalities), ema
        self.postprocess, self.threshold, self.overwrite = postprocess, threshold, overwrite
        self.batch_size, self.num_workers, self.progress = batch_size, num_workers, progress
        self.say = say if say is not None else (lambda line: None)
        self.clock_write, self.continue_anyway, self.keep_record = clock_write, continue_anyway, record
        self.rank, self.world_size, self.bar = rank, world_size, bar or command
        self.models: Dict[str, object] = {}  # checkpoint key -> loaded model (its task set)
        self._paths: Dict[str, Path] = {}
        self._entries: Dict[str, dict] = {}  # checkpoint key -> provenance entry (hashed once)
        self._synths: Dict[str, Synthesizer] = {}
        self.asked, self.sampler_chosen, self._said = options, sampler_chosen, set()

    # -- checkpoints ------------------------------------------------------------------------------------
    def model(self, key: str):
        """The loaded checkpoint of ``key`` (a modality, or :data:`ANY` for the unified one), loaded once."""
        if key not in self.models:
            path = self.checkpoints[key]
            loaded, task = resolve_model(path, None if key == ANY else key, self.modalities, self.network, self.ema,
                                         self.device)
            if task.is_insertion:  # its inputs are a t1n and a drawing, not a case's other modalities
                raise CwdmError(f"{path}: an insertion checkpoint completes no missing modality; insert tumours with "
                                f"cwdm sample --data_dir CASES --model_path {path}")
            if task.is_inpainting:  # its inputs are a voided t1n and a mask, not a case's other modalities
                raise CwdmError(f"{path}: an inpainting checkpoint completes no missing modality; inpaint cases of the "
                                f"challenge layout with cwdm sample --data_dir CASES --model_path {path}")
            if key == ANY and not task.is_unified:
                raise CwdmError(f"{path}: given as the unified checkpoint, but it synthesizes {task.target} only "
                                f"(pass it as {model_option(task.target)})")
            self.models[key], self._paths[key] = loaded, path
        return self.models[key]

    def unified(self):
        """The loaded unified checkpoint (``any``), or None when none is given."""
        return self.model(ANY) if ANY in self.checkpoints else None

    # -- plans --------------------------------------------------------------------------------------------
    def paired(self, data_dir: Path, output_dir: Path, model_path: Path, target: Optional[str],
               save_target: bool = False, before: Optional[Callable[[], None]] = None) -> Tuple[Plan, str]:
        """Plan ``cwdm sample``: the target of every usable case of ``data_dir`` (this rank's share) into
        ``output_dir/<case>/``, skipping written ones unless ``overwrite``; ``before`` is called once the
        checkpoint is loaded, before the cases are read (the command's notes). An inpainting checkpoint
        plans :meth:`inpainting` instead (``output_dir`` the data folder: beside the inputs; ``target`` and
        ``save_target`` unused).

        Returns:
            ``(plan, target)``.
        """
        from ..data.cases import discover_cases
        from .steps import check_output_dir, chosen_target

        loaded, task = resolve_model(model_path, target, self.modalities, self.network, self.ema, self.device)
        if task.fills_region:  # the checkpoint says what the folder holds: inpainting or insertion cases
            from .region_plan import plan_region_folder

            self.checkpoints[task.target], self.models[task.target] = Path(model_path), loaded
            self._paths[task.target] = Path(model_path)
            return plan_region_folder(self, region_task(task), data_dir, output_dir, before), task.target
        check_output_dir(output_dir, data_dir)  # (the caller accepted the data folder itself, for inpainting)
        target = chosen_target(task, target, model_path)
        self.models[target], self._paths[target] = loaded, Path(model_path)
        self._use_recorded([target])
        self._synth(target, 1)  # the network checked and moved to the device before any case is read
        if before is not None:
            before()
        conditions = list(task.inputs_for(target))
        all_cases = discover_cases(data_dir, task.modalities)
        cases = usable_cases(all_cases, conditions, loaded.config.image_divisor, self.say, labels=task.label_maps)

        def destination(case, mod):
            return paired_paths(Path(output_dir), case.name, case.prefix, mod, save_target)

        bad = len(all_cases) - len(cases)
        record = self._record(Path(output_dir), [target], in_place=False, inputs=False, redo=self.overwrite)
        cases = cases[self.rank::self.world_size]  # split before looking at outputs other ranks may write
        mine = [c for c in cases if self.overwrite or not destination(c, target)["volume"].exists()]
        out = Plan({(target, target): mine} if mine else {}, destination, record, len(cases),
                   len(cases) - len(mine), bad, checked=True, inputs=False, overwrite=self.overwrite)
        if mine:
            out.grid = model_grid(mine[0], conditions[0], loaded.config.image_divisor)
            out.compiling = self._synth(target, len(mine)).compiles(out.grid)
        return out, target

    def completion(self, data_dir: Path, output_dir: Optional[Path], overwrite: Optional[bool] = None) -> Plan:
        """Plan ``cwdm auto``: whatever each case of ``data_dir`` (this rank's share) misses, into its case
        folder (``output_dir`` None or the data folder) or ``output_dir/<case>/`` (where ``overwrite``,
        default the pipeline's, redoes written ones)."""
        from ..data.cases import discover_cases

        unified = self.unified()
        cases = discover_cases(data_dir, self.modalities)[self.rank::self.world_size]
        in_place = output_dir is None or Path(output_dir).resolve() == Path(data_dir).resolve()
        problems: List[str] = []

        def report(line: str) -> None:
            problems.append(line)
            self.say(line)

        overwrite = self.overwrite if overwrite is None else overwrite
        groups, complete, unfixable = plan(cases, self.modalities, self.checkpoints, None if in_place else output_dir,
                                           overwrite, report, unified.task if unified is not None else None,
                                           recorded_synthesized(data_dir) if in_place else ())
        out_dir = None if in_place else output_dir
        return self._completion_plan(groups, lambda case, mod: completion_paths(output_path(case, mod, out_dir)),
                                     Path(data_dir) if in_place else Path(output_dir), in_place, overwrite,
                                     len(cases), complete, unfixable, problems)

    def one_case(self, case, modality: str, output_file: Path, overwrite: bool = False) -> Plan:
        """Plan the completion of one case built from given files: ``modality`` into ``output_file``
        (recorded in its folder; ``overwrite`` replaces it, the folder's other results are still checked)."""
        key = modality if modality in self.checkpoints else ANY
        return self._completion_plan({(modality, key): [case]}, lambda c, m: completion_paths(Path(output_file)),
                                     Path(output_file).parent, False, overwrite, 1, 0, 0, [], redo=False)

    def _completion_plan(self, groups, destination, folder: Path, in_place: bool, overwrite: bool, cases: int,
                         complete: int, unfixable: int, problems: List[str], redo: Optional[bool] = None) -> Plan:
        """Check the case folders, load the checkpoints and check the record of a completion plan."""
        if in_place:
            check_case_folders(groups)  # a read-only case folder: one line now, not after the network ran
        for key in dict.fromkeys(key for _, key in groups):  # load (and so check) each before any case
            self.model(key)
        self._use_recorded(list(dict.fromkeys(key for _, key in groups)))
        record = self._record(folder, list(dict.fromkeys(m for m, _ in groups)), in_place, inputs=True,
                              redo=overwrite and not in_place if redo is None else redo, keys={m: k for m, k in groups})
        out = Plan(groups, destination, record, cases, complete, unfixable, problems=problems, overwrite=overwrite)
        first = next(iter(groups), None)
        if first is not None:
            loaded = self.models[first[1]]
            case = groups[first][0]
            out.grid = model_grid(case, loaded.task.inputs_for(first[0], case.present)[0], loaded.config.image_divisor)
            out.compiling = run_compiles(self.options, self.device, cases_of(groups, first[1]), out.grid)
        return out

    def _record(self, folder: Path, modalities: List[str], in_place: bool, inputs: bool, redo: bool,
                keys: Optional[Dict[str, str]] = None):
        """The run's provenance record in ``folder``, checked against the run's settings before any work
        (``redo``: every result there is replaced, nothing to check against)."""
        from .provenance import MOVE_AWAY, REDO_ALL, Provenance, checkpoint_entry, result_settings

        if not self.keep_record:
            return None
        keys = keys or {m: m for m in modalities}
        for key in keys.values():
            if key not in self._entries:
                self._entries[key] = checkpoint_entry(self._paths[key], self.models[key])
        settings = result_settings(self.options, self.device, target=None if inputs else modalities[0],
                                   postprocess=self.postprocess, threshold=self.threshold, ema=self.ema)
        record = Provenance(folder, self.command, settings, {m: self._entries[keys[m]] for m in modalities},
                            self.device, self.rank, how=MOVE_AWAY if in_place else REDO_ALL)
        if self.command == "api":
            record.check_writable()
            count, diffs = (0, []) if redo else record.conflicts()
            if count and not self.continue_anyway:
                raise CwdmError(f"{record.path}: {count} results there were made with other settings "
                                f"({'; '.join(diffs)}); use the recorded settings, continue_anyway=True to add "
                                f"differently made results, or another output folder")
            return record
        record.check(redo=redo, continue_anyway=self.continue_anyway, say=self.say,
                     redo_hint=("delete the synthesized files it lists to redo them" if in_place
                                else "--overwrite to redo every case"))
        return record

    def _use_recorded(self, keys: List[str]) -> None:
        """``self.options`` of a plan using the checkpoints ``keys``: as asked, or, when the user chose no
        sampler, the sampler they record (said once; :func:`cwdm.inference.recorded.recorded_options`)."""
        from .recorded import recorded_options

        if self.sampler_chosen:
            return
        self.options, line = recorded_options(self.asked, {self._paths[k]: self.models[k] for k in keys})
        if line is not None and line not in self._said:
            self._said.add(line)
            self.say(line)

    def _synth(self, key: str, run_cases: int) -> Synthesizer:
        """The Synthesizer of checkpoint ``key`` (kept between runs), sized for a run of ``run_cases``."""
        if key not in self._synths or self._synths[key].options != self.options:
            loaded = self.models[key]
            self._synths[key] = Synthesizer(loaded, loaded.task, self.device, self.options)
        self._synths[key].run_cases = run_cases
        return self._synths[key]

    # -- the run ------------------------------------------------------------------------------------------
    def announce(self, plan: Plan) -> None:
        """Say the device (and a CPU warning, the compile note) for ``plan``."""
        channels = max((self.models[k].config.model_channels for _, k in plan.groups), default=0)
        announce(self.say, self.device, channels, plan.grid, self.options, plan.todo, plan.compiling)

    def run(self, plan: Plan) -> Result:
        """Synthesize and write every volume of ``plan`` (within its record's session).

        Returns:
            A :class:`Result`; a volume found degenerate (:func:`cwdm.inference.synthesis.degenerate`) is
            said, listed in ``degenerate`` and not written, the others are.
        """
        import contextlib

        from ..feedback import RunClock

        result = Result()
        if not plan.groups:
            return result
        clock = (RunClock(plan.todo, self.options.calls_per_case, self.clock_write, plan.compiling)
                 if self.clock_write is not None else None)
        with plan.record.session() if plan.record is not None else contextlib.nullcontext():
            for (mod, key), group in plan.groups.items():
                self._run_group(plan, mod, key, group, clock, result)
        return result

    def _run_group(self, plan: Plan, mod: str, key: str, group: list, clock, result: Result) -> None:
        """Synthesize ``mod`` with checkpoint ``key`` for the usable cases of ``group``."""
        from .inpaint import inpaint_cases
        from .insert import insert_cases
        from .steps import synthesize_cases

        loaded = self.models[key]
        task = loaded.task
        write_cases = insert_cases if task.is_insertion else inpaint_cases if task.is_inpainting else synthesize_cases
        good = group
        if not plan.checked:
            good = usable_cases(group, task.condition_names if not task.is_unified else (),
                                loaded.config.image_divisor, lambda line: (self.say(line), result.unusable.append(line)),
                                labels=task.label_maps)
        if not good:
            return
        synth = self._synth(key, cases_of(plan.groups, key))
        by_name = {c.name: c for c in good}

        def on_case(item, paths, seconds):
            result.written.append((item["name"], mod, paths["volume"]))
            if plan.record is not None:
                plan.record.case_done(paths["volume"], mod, seconds, inputs=item["inputs"] if plan.inputs else None)

        with progress_bar(len(good) * self.options.calls_per_case, self.progress, f"{self.bar} {mod}") as bar:
            write_cases(synth, good, lambda item: plan.destination(by_name[item["name"]], mod), target=mod,
                        threshold=self.threshold, postprocess_on=self.postprocess, overwrite=plan.overwrite,
                        batch_size=self.batch_size, num_workers=self.num_workers, bar=bar, clock=clock,
                        on_case=on_case, on_problem=lambda line: (self.say(line), result.degenerate.append(line)))


def region_task(task):
    """The :class:`cwdm.inference.region_plan.RegionTask` of a region task's :class:`cwdm.task.Task`."""
    from .inpaint import INPAINTING
    from .insert import INSERTION

    return INPAINTING if task.is_inpainting else INSERTION
