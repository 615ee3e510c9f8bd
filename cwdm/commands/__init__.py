"""One module per ``cwdm`` command: its config dataclass (the flags), ``HELP``, ``ALIASES`` and
``run(cfg)``. Only the entry points (:mod:`cwdm.cli`, ``scripts/``) import these."""
