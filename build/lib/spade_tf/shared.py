"""Where the project's shared reference material lives (fixtures, reference numbers)."""

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def shared_dir() -> pathlib.Path:
    """`$SPADE_SHARED`, or `../shared` beside the repository."""
    return pathlib.Path(os.environ.get("SPADE_SHARED", REPO_ROOT.parent / "shared")).resolve()
