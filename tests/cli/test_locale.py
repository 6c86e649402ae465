"""The CLI under an ASCII locale (LANG=C, PYTHONUTF8=0: many cluster nodes and CI runners)."""

from __future__ import annotations

import os
import subprocess
import sys


def _run_ascii(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env.pop("PYTHONIOENCODING", None)
    code = "from agseg.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, timeout=120)


def test_help_with_non_ascii_text_prints_under_an_ascii_locale():
    # `agseg compare --help` says "±"; before the fix it died with UnicodeEncodeError under LANG=C
    res = _run_ascii("compare", "--help")
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert b"Usage" in res.stdout and b"UnicodeEncodeError" not in res.stderr
