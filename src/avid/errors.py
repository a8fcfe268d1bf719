"""Errors as a user reads them: one line saying what was wrong (``avid: error: ...``).

The command line prints ``one_line(error)`` for any exception and exits with status 2; the full
traceback only with ``avid --debug``.
"""

from __future__ import annotations

import re

import yaml

from avid.locks import FolderBusy

# Errors the project raises for bad input: their message is already the whole story
EXPECTED = (ValueError, FileNotFoundError, FolderBusy, FloatingPointError)


def one_line(e: BaseException) -> str:
    """The error as one line: the message of an expected error, else its kind, message and a hint."""
    if isinstance(e, yaml.YAMLError):
        text = f"invalid YAML: {e}"
    elif isinstance(e, EXPECTED):
        text = str(e)
    elif isinstance(e, OSError) and e.strerror:
        text = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    elif isinstance(e, KeyError):
        text = (f"missing key {e.args[0]!r} (a config.yaml or index.json from another version of avid, or "
                "edited by hand?)")
    elif type(e).__module__.split(".")[0] == "lightning":
        text = f"Lightning: {e}"
    else:
        text = f"{type(e).__name__}: {e} (this is a bug or an unchecked input; `avid --debug ...` shows where)"
    return re.sub(r"\s+", " ", text).strip() or type(e).__name__
