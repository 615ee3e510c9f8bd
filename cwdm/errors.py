"""User-facing errors.

A :class:`CwdmError` carries a one-line message naming the file and what is
wrong; the command-line front end prints it as ``cwdm: error: <message>`` and
exits non-zero, without a traceback.

A CwdmError raised in a DataLoader worker process comes back to the main
process with the worker's traceback in its text; only the original message
is kept, so it stays one line there too.
"""

WORKER_TRACEBACK = "Original Traceback (most recent call last)"
"""How torch's DataLoader introduces a worker's traceback in a re-raised exception's message."""


class CwdmError(Exception):
    """An error caused by the user's input (files, flags, checkpoints)."""

    def __init__(self, message: str):
        text = str(message)
        if WORKER_TRACEBACK in text and "CwdmError: " in text:
            text = text.rpartition("CwdmError: ")[2].strip()
        super().__init__(" ".join(text.split("\n")))
