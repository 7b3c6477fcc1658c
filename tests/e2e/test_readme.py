"""The README's examples run as written, so they cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support.processes import env_for

README = Path(__file__).resolve().parents[2] / "README.md"


def code_block(section: str, language: str) -> str:
    """The first ``language`` code block under the heading ``section``."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match, f"no {language} block under {section!r}"
    return match.group(1)


def test_python_example_runs(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code_block("Using Postroom from Python", "python"))
    data = tmp_path / "var"
    env = env_for(data, f"sqlite:///{data / 'postroom.db'}")
    result = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "queued" in result.stdout
