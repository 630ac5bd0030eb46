"""Measuring what a fix bounds: the peak memory of a fresh Python process.

``peak_growth(setup, action)`` runs ``setup`` then ``action`` in a new interpreter (the
worktree's ``fcnn`` importable) and returns how many bytes its peak resident memory
(``ru_maxrss``) grew while ``action`` ran. Keep ``setup``'s own peak below what
``action`` is expected to need: only growth beyond the setup's peak is seen.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PRELUDE = """\
import resource
def _peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
"""


def peak_growth(setup: str, action: str, timeout: float = 60.0) -> int:
    """Bytes by which a fresh process's peak RSS grows during ``action`` (after ``setup``).

    Raises ``AssertionError`` with the child's stderr when it fails.
    """
    code = f"{_PRELUDE}{setup}\n_before = _peak()\n{action}\nprint(_peak() - _before)\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.strip().splitlines()[-1])
