"""The task spec: what a model maps, i.e. its conditions (in order) and its target.

A :class:`Task` is stored in every cwdm checkpoint and run ``config.json``, and
it is what data loading, synthesis, ``cwdm auto``, ``cwdm demo`` and the
network's ``in_channels`` read. For the released BraTS models the task is
"``target`` from the other three modalities in canonical order"
(:meth:`Task.default`), e.g. ``t1c from t1n, t2w, t2f``.

Each condition has a kind:

* ``image``: an intensity volume, clipped at its 0.1/99.9 % quantiles and
  scaled to [0, 1] (one channel);
* ``label``: a label map such as the BraTS ``seg`` with a declared label set;
  never clipped or scaled (see :mod:`cwdm.data.datasets`).

Channels in the network: each condition channel becomes 8 wavelet subbands,
and the noisy target adds 8 more (:func:`cwdm.model.unet.in_channels_for`).

A **unified** task (target :data:`~cwdm.naming.ANY`, :meth:`Task.unified`) has one input
slot per modality, in order; the slot of the modality being synthesized, and
of any modality a case lacks, is zero-filled, and the target's identity is
given as one constant channel per modality (one-hot) after the subbands
(44 input channels for the four BraTS modalities). With
``drop_conditions`` the network was also trained with random subsets of the
other modalities hidden (at least one kept), so it completes cases that miss
several modalities.

The **inpainting** task (:meth:`Task.inpainting`; the field ``inpaint`` marks it, ``"inpainting": true``
in its dict) fills a region of a t1n with healthy tissue (the BraTS inpainting challenge,
:mod:`cwdm.data.inpainting`): target ``t1n``, conditions the voided t1n (``t1n-voided``, an image)
and the region (``mask``, a label map with label 1), 24 input channels. Its images are scaled by
the convention of :mod:`cwdm.data.inpaint_volumes` (both with the voided image's bounds), not each
by its own.

The **insertion** task (:meth:`Task.insertion`; the field ``insert_margin`` marks it, ``"insertion":
{"margin": [lo, hi]}`` in its dict) is inpainting's inverse: it writes a tumour of given BraTS labels into
a t1n (:mod:`cwdm.data.insertion`). Target ``t1n``; conditions the voided t1n (``t1n-voided``, an image),
the region (``mask``, label 1) and the labels wanted in it (``labels``, a label map with labels 1, 2, 3),
48 input channels. Its region is the labelled voxels dilated by a margin drawn in ``lo..hi`` voxels per
training item; that range is part of the task, since sampling dilates a drawing by its middle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from .naming import ANY, MODALITIES, SEG
from .data.inpainting import IMAGE as INPAINT_TARGET, MASK as INPAINT_MASK, VOIDED as INPAINT_VOIDED
from .data.insertion import LABELS as INSERT_LABELS, LABEL_VALUES as INSERT_LABEL_VALUES
from .errors import CwdmError
from .model.unet import condition_volumes_of, in_channels_for

IMAGE, LABEL = "image", "label"
KINDS = (IMAGE, LABEL)
"""The kinds of condition a task may have."""


@dataclass(frozen=True)
class Condition:
    """One input of a model.

    Attributes:
        name: the modality (file-name suffix) it is read from, e.g. ``t1n`` or ``seg``.
        kind: :data:`IMAGE` or :data:`LABEL`.
        labels: a label map's declared non-zero labels (0 is background); empty for images.
    """

    name: str
    kind: str = IMAGE
    labels: Tuple[int, ...] = ()

    @property
    def channels(self) -> int:
        """Volumes this condition gives the network: 1 for an image, one per declared label for a label map."""
        return len(self.labels) if self.kind == LABEL else 1

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == LABEL:
            out["labels"] = list(self.labels)
        return out

    def __str__(self) -> str:
        return self.name if self.kind == IMAGE else f"{self.name} (labels {' '.join(map(str, self.labels))})"


@dataclass(frozen=True)
class Task:
    """What a model synthesizes, and from what.

    Attributes:
        target: the modality the network synthesizes, or :data:`~cwdm.naming.ANY` for a unified model.
        conditions: the network's inputs, in the order of its input channels (a unified model: every modality).
        modalities: the image modalities of a complete case (``cwdm auto`` looks for the missing one among them).
        drop_conditions: a unified model trained to work from any non-empty subset of the other modalities.
        inpaint: the inpainting task (:meth:`inpainting`; no other target or conditions).
        insert_margin: the insertion task's margin range ``(lo, hi)`` in voxels (:meth:`insertion`); None
            for every other task.
    """

    target: str
    conditions: Tuple[Condition, ...]
    modalities: Tuple[str, ...] = MODALITIES
    drop_conditions: bool = False
    inpaint: bool = False
    insert_margin: Optional[Tuple[int, ...]] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", tuple(self.conditions))
        object.__setattr__(self, "modalities", tuple(self.modalities))
        if self.insert_margin is not None:
            object.__setattr__(self, "insert_margin", tuple(self.insert_margin))
        self.validate()

    @classmethod
    def default(cls, target: str, modalities: Sequence[str] = MODALITIES,
                conditions: Optional[Sequence[str]] = None,
                labels: Optional[Mapping[str, Sequence[int]]] = None) -> "Task":
        """The task of ``target`` from ``conditions`` (default: the other modalities, in order).

        Args:
            target: the modality to synthesize.
            modalities: the image modalities of a complete case.
            conditions: condition names in order; None or empty gives the released layout.
            labels: label-map conditions: name -> declared non-zero labels (all others are images).
        """
        labels = dict(labels or {})
        mods = tuple(modalities)
        if target not in mods:
            raise CwdmError(f"target {target!r} is not one of the modalities {list(mods)}")
        names = list(conditions) if conditions else [m for m in mods if m != target]
        unknown = sorted(set(labels) - set(names))
        if unknown:
            raise CwdmError(f"label maps {unknown} are not among the conditions {names}")
        conds = tuple(Condition(n, LABEL, tuple(int(v) for v in labels[n])) if n in labels else Condition(n)
                      for n in names)
        return cls(target, conds, mods)

    @classmethod
    def unified(cls, modalities: Sequence[str] = MODALITIES, drop_conditions: bool = False) -> "Task":
        """The task of one network for every modality: one image slot per modality (see the module notes)."""
        mods = tuple(modalities)
        return cls(ANY, tuple(Condition(m) for m in mods), mods, bool(drop_conditions))

    @classmethod
    def inpainting(cls) -> "Task":
        """The inpainting task: ``t1n`` from the voided t1n (image) and the mask (label map, label 1)."""
        return cls(INPAINT_TARGET, INPAINTING_CONDITIONS, INPAINTING_MODALITIES, inpaint=True)

    @classmethod
    def insertion(cls, margin: Sequence[int] = (2, 5)) -> "Task":
        """The insertion task: ``t1n`` from the voided t1n (image), the region (label 1) and the labels
        wanted in it (labels 1, 2, 3); the region is the labels dilated by ``margin`` = ``(lo, hi)``
        voxels (drawn per training item; sampling uses ``(lo + hi) // 2``)."""
        return cls(INPAINT_TARGET, INSERTION_CONDITIONS, INSERTION_MODALITIES, insert_margin=tuple(margin))

    def validate(self) -> None:
        """Raise a one-line :class:`CwdmError` if the task cannot be used."""
        names = self.condition_names
        problems = []
        if self.inpaint and (self.target, self.conditions, self.modalities, self.drop_conditions) != \
                (INPAINT_TARGET, INPAINTING_CONDITIONS, INPAINTING_MODALITIES, False):
            problems.append(f"an inpainting task maps {INPAINT_TARGET} from {INPAINT_VOIDED} and {INPAINT_MASK} "
                            f"(labels 1) with the modalities {list(INPAINTING_MODALITIES)}, not {self.target} from "
                            f"{list(names)} with {list(self.modalities)}")
        if self.insert_margin is not None:
            problems += _insertion_problems(self)
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            problems.append(f"modalities {list(self.modalities)} must be unique and not empty")
        if self.target == ANY:
            if names != self.modalities or any(c.kind != IMAGE for c in self.conditions):
                problems.append(f"a unified task's inputs are its modalities {list(self.modalities)} as images, "
                                f"not {list(names)}")
            if len(self.modalities) < 2:
                problems.append("a unified task needs at least two modalities")
        elif self.drop_conditions:
            problems.append("drop_conditions needs the unified target 'any'")
        elif self.target not in self.modalities:
            problems.append(f"target {self.target!r} is not one of the modalities {list(self.modalities)}")
        if not names:
            problems.append("no conditions")
        if len(set(names)) != len(names):
            problems.append(f"conditions {list(names)} repeat a name")
        if self.target in names and self.target != ANY:
            problems.append(f"the target {self.target} is also a condition")
        for c in self.conditions:
            if c.kind not in KINDS:
                problems.append(f"condition {c.name} has unknown kind {c.kind!r} (choose {' or '.join(KINDS)})")
            elif c.kind == IMAGE and c.name not in self.modalities:
                problems.append(f"image condition {c.name} is not one of the modalities {list(self.modalities)}")
            elif c.kind == LABEL and c.name not in self.modalities and c.name != SEG:
                problems.append(f"label map {c.name} is neither {SEG} nor one of the modalities")
            elif c.kind == LABEL and (not c.labels or len(set(c.labels)) != len(c.labels) or 0 in c.labels):
                problems.append(f"label map {c.name} needs distinct non-zero labels, got {list(c.labels)}")
        if problems:
            raise CwdmError("invalid task: " + "; ".join(problems))

    @property
    def condition_names(self) -> Tuple[str, ...]:
        """The conditions' modality names, in order."""
        return tuple(c.name for c in self.conditions)

    @property
    def label_maps(self) -> Dict[str, Tuple[int, ...]]:
        """The label-map conditions: name -> declared non-zero labels (empty for an all-image task)."""
        return {c.name: c.labels for c in self.conditions if c.kind == LABEL}

    @property
    def condition_channels(self) -> int:
        """Condition volumes the network takes (before the wavelet transform)."""
        return sum(c.channels for c in self.conditions)

    @property
    def is_unified(self) -> bool:
        """Whether one network synthesizes any modality (target :data:`~cwdm.naming.ANY`)."""
        return self.target == ANY

    @property
    def is_inpainting(self) -> bool:
        """Whether the model fills a masked region of a t1n (:meth:`inpainting`)."""
        return self.inpaint

    @property
    def is_insertion(self) -> bool:
        """Whether the model writes a tumour of given labels into a t1n (:meth:`insertion`)."""
        return self.insert_margin is not None

    @property
    def fills_region(self) -> bool:
        """Whether the model fills a masked region of a t1n (inpainting or insertion; the mask is its
        second condition)."""
        return self.inpaint or self.is_insertion

    @property
    def targets(self) -> Tuple[str, ...]:
        """The modalities the network can synthesize."""
        return self.modalities if self.is_unified else (self.target,)

    @property
    def identity_channels(self) -> int:
        """Constant input channels naming the target: one per modality for a unified task, else none."""
        return len(self.modalities) if self.is_unified else 0

    @property
    def in_channels(self) -> int:
        """The network's input channels: 8 subbands of the noisy target and of every condition volume,
        plus the target's identity channels."""
        return in_channels_for(self.condition_channels, self.identity_channels)

    @property
    def is_default(self) -> bool:
        """Whether this is the released models' task (the other modalities, all images, in order)."""
        return not self.is_unified and self == Task.default(self.target, self.modalities)

    def inputs_for(self, target: str, present: Optional[Iterable[str]] = None) -> Tuple[str, ...]:
        """The conditions that feed the synthesis of ``target`` when a case has the modalities ``present``
        (None: all). A per-contrast task always needs all of its conditions; a unified one uses the
        other modalities the case has."""
        if target not in self.targets:
            raise CwdmError(f"the model synthesizes {' or '.join(self.targets)}, not {target}")
        if not self.is_unified:
            return self.condition_names
        have = set(self.modalities if present is None else present)
        return tuple(m for m in self.modalities if m != target and m in have)

    def describe(self) -> str:
        """E.g. ``t1c from t1n, t2w, t2f``."""
        if self.is_inpainting:
            return f"inpainting: {self.target} inside {INPAINT_MASK} from {INPAINT_VOIDED}"
        if self.is_insertion:
            lo, hi = self.insert_margin
            return (f"insertion: {self.target} inside {INPAINT_MASK} from {INPAINT_VOIDED} and {INSERT_LABELS} "
                    f"(labels {' '.join(map(str, INSERT_LABEL_VALUES))}; {INPAINT_MASK} = {INSERT_LABELS} dilated by "
                    f"{lo}-{hi} voxels)")
        if self.is_unified:
            also = ", or fewer (trained with dropped conditions)" if self.drop_conditions else ""
            return f"any of {', '.join(self.modalities)} from the others{also}"
        return f"{self.target} from {', '.join(map(str, self.conditions))}"

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly form, as stored in checkpoints and ``config.json``."""
        out = {"target": self.target, "conditions": [c.to_dict() for c in self.conditions],
               "modalities": list(self.modalities)}
        if self.is_unified:
            out["drop_conditions"] = self.drop_conditions
        if self.inpaint:
            out["inpainting"] = True
        if self.is_insertion:
            out["insertion"] = {"margin": list(self.insert_margin)}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "task") -> "Task":
        """Rebuild a task from :meth:`to_dict` output; a one-line error names ``source`` if it is malformed."""
        try:
            conds = tuple(Condition(str(c["name"]), str(c.get("kind", IMAGE)), tuple(int(v) for v in c.get("labels", ())))
                          for c in data["conditions"])
            insertion = data.get("insertion")
            margin = None if insertion is None else tuple(int(v) for v in insertion["margin"])
            return cls(str(data["target"]), conds, tuple(str(m) for m in data["modalities"]),
                       bool(data.get("drop_conditions", False)), bool(data.get("inpainting", False)), margin)
        except (KeyError, TypeError, ValueError) as exc:
            raise CwdmError(f"{source}: malformed task spec ({type(exc).__name__}: {exc})") from None
        except CwdmError as exc:
            raise CwdmError(f"{source}: {exc}") from None


INPAINTING_CONDITIONS = (Condition(INPAINT_VOIDED), Condition(INPAINT_MASK, LABEL, (1,)))
"""The inpainting task's conditions, in the network's order: the voided t1n, then the mask."""
INPAINTING_MODALITIES = (INPAINT_TARGET, INPAINT_VOIDED, INPAINT_MASK)
"""The volumes of an inpainting case the task names."""
INSERTION_CONDITIONS = INPAINTING_CONDITIONS + (Condition(INSERT_LABELS, LABEL, INSERT_LABEL_VALUES),)
"""The insertion task's conditions, in the network's order: the voided t1n, the region, the labels."""
INSERTION_MODALITIES = INPAINTING_MODALITIES + (INSERT_LABELS,)
"""The volumes an insertion task names."""


def _insertion_problems(task: Task) -> list:
    """Why ``task``, marked as insertion, is not the insertion task (empty when it is)."""
    problems = []
    if (task.target, task.conditions, task.modalities, task.drop_conditions, task.inpaint) != \
            (INPAINT_TARGET, INSERTION_CONDITIONS, INSERTION_MODALITIES, False, False):
        problems.append(f"an insertion task maps {INPAINT_TARGET} from {INPAINT_VOIDED}, {INPAINT_MASK} (labels 1) "
                        f"and {INSERT_LABELS} (labels {' '.join(map(str, INSERT_LABEL_VALUES))}) with the "
                        f"modalities {list(INSERTION_MODALITIES)}, not {task.target} from "
                        f"{[str(c) for c in task.conditions]} with {list(task.modalities)}")
    margin = task.insert_margin
    if len(margin) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in margin) \
            or not 0 <= margin[0] <= margin[1]:
        problems.append(f"an insertion task's margin is two whole numbers of voxels 0 <= lo <= hi, got "
                        f"{list(margin)}")
    return problems


def check_network(task: Task, in_channels: int, source: str) -> None:
    """Raise a one-line :class:`CwdmError` unless a network of ``in_channels`` inputs fits ``task``."""
    if in_channels != task.in_channels:
        raise CwdmError(f"{source}: the network takes {in_channels} input channels "
                        f"({condition_volumes_of(in_channels, task.identity_channels)} condition volumes), but "
                        f"the task {task.describe()} gives {task.in_channels} ({task.condition_channels})")


def parse_labels(entries: Iterable[str]) -> Dict[str, Tuple[int, ...]]:
    """``["seg=1,2,3"]``-style flag values (or ``seg=1 2 3`` already split) as name -> labels."""
    out: Dict[str, Tuple[int, ...]] = {}
    for entry in entries:
        name, sep, values = str(entry).partition("=")
        try:
            labels = tuple(int(v) for v in values.replace(",", " ").split())
        except ValueError:
            labels = ()
        if not sep or not name or not labels:
            raise CwdmError(f"--label_maps {entry!r}: expected NAME=L1,L2,... (e.g. seg=1,2,3)")
        out[name] = labels
    return out
