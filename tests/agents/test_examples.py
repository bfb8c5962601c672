"""The OpenAI Agents SDK examples of the README and of docs/openai-agents.md run as written,
in an empty folder, and print what the pages say they print."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _run(code: str, folder: Path) -> str:
    script = folder / "example.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=folder, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_swaps_the_session_in(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    section = re.search(r"## Use it with the OpenAI Agents SDK\n(.*?)\n## ", text, re.S)
    assert section, "the README's OpenAI Agents SDK section is missing"
    code = re.search(r"```python\n(.*?)```", section.group(1), re.S)
    assert code and "TurnstoreSession(" in code.group(1)
    assert _run(code.group(1), tmp_path) == "Hello!\n"
    assert (tmp_path / "agents.db").is_file()  # the session's store, where the URL says


def test_the_guide_runs_a_double_submit_once(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "openai-agents.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code
    printed = _run(code.group(1), tmp_path).splitlines()
    assert printed == [
        "['3 and 7', 'finished']",
        "user ",
        "function_call c1",
        "function_call c2",
        "function_call_output c1",
        "function_call_output c2",
        "message ",
    ]
