"""User-facing errors.

A :class:`CwdmError` carries a one-line message naming the file and what is
wrong; the command-line front end prints it as ``cwdm: error: <message>`` and
exits non-zero, without a traceback.

A CwdmError raised in a DataLoader worker process comes back to the main
process with the worker's traceback in its text; only the original message
is kept, so it stays one line there too.

A message that tells the user which setting to change names it the way the
caller gave it: :func:`option` spells ``--num_groups`` on the command line and
``num_groups=`` inside a call of the Python API (:func:`api_call`). Messages write a volume's shape
as :func:`format_shape` does (``240x240x155``).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Sequence

WORKER_TRACEBACK = "Original Traceback (most recent call last)"
"""How torch's DataLoader introduces a worker's traceback in a re-raised exception's message."""


class CwdmError(Exception):
    """An error caused by the user's input (files, flags, checkpoints)."""

    def __init__(self, message: str):
        text = str(message)
        if WORKER_TRACEBACK in text and "CwdmError: " in text:
            text = text.rpartition("CwdmError: ")[2].strip()
        super().__init__(" ".join(text.split("\n")))


_IN_API = contextvars.ContextVar("cwdm_in_api", default=False)
API_SPELLING = {"sampling_steps": "steps=", "overwrite": "overwrite=True", "continue_anyway": "continue_anyway=True",
                "contr": "models={MODALITY: PATH}", "model_path": "models=", "model": "models=",
                "output_dir": "output_folder="}
"""How the Python API (:class:`cwdm.api.MissingModality`) spells a command-line flag where it is not
``<name>=``."""


def option(name: str) -> str:
    """The setting ``name`` as the user wrote it: ``--name`` from the command line, ``name=`` (or the
    API's own spelling, :data:`API_SPELLING`) inside :func:`api_call`."""
    if _IN_API.get():
        return API_SPELLING.get(name, f"{name}=")
    return f"--{name}"


def model_option(modality: str) -> str:
    """How to give the checkpoint of ``modality``: ``--model t2f=PATH``, or ``models={'t2f': PATH}`` in the API."""
    return f"models={{'{modality}': PATH}}" if _IN_API.get() else f"--model {modality}=PATH"


def format_shape(shape: Sequence[int]) -> str:
    """A shape as messages write it: ``240x240x155``."""
    return "x".join(str(int(s)) for s in shape)


@contextlib.contextmanager
def api_call() -> Iterator[None]:
    """Within it, :func:`option` spells settings as the Python API's arguments."""
    token = _IN_API.set(True)
    try:
        yield
    finally:
        _IN_API.reset(token)
