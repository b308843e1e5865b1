"""Which code produced a result: every recipe records :func:`git_commit` in its ``metrics.json``, so a number in
a benchmark table or a bug report can be traced to the commit (and whether it had local edits) that made it."""

from __future__ import annotations

import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def git_commit(directory: str | Path = PACKAGE_DIR) -> str | None:
    """Short hash of the commit checked out around ``directory`` (default: this package), with ``-dirty`` when
    tracked files differ from it (untracked files such as run outputs do not count, as in ``git describe
    --dirty``).

    ``None``, never an error, when there is no answer: no git executable, ``directory`` outside a checkout (a
    wheel install), or not tracked by the checkout around it (a virtual environment inside another project)."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=30)

    try:
        commit = git("rev-parse", "--short", "HEAD")
        tracked = git("ls-files", "--", ".")
        changes = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode or changes.returncode or not tracked.stdout.strip():
        return None
    return commit.stdout.strip() + ("-dirty" if changes.stdout.strip() else "")
