"""User-facing errors.

A :class:`CwdmError` carries a one-line message naming the file and what is
wrong; the command-line front end prints it as ``cwdm: error: <message>`` and
exits non-zero, without a traceback.
"""


class CwdmError(Exception):
    """An error caused by the user's input (files, flags, checkpoints)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))
