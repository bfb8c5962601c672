"""The README's example runs and prints what the README says it prints."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_the_agent_loop_example_prints_what_the_readme_shows(tmp_path: Path) -> None:
    text = README.read_text()
    code = re.search(r"## An agent loop\n\n```python\n(.*?)```", text, re.S)
    shown = re.search(r"It prints .*?:\n\n```\n(.*?)```", text, re.S)
    assert code and shown
    script = tmp_path / "example.py"
    script.write_text(code.group(1))
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == shown.group(1)


def test_the_readme_starts_with_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    assert block[0].endswith("python -m store demo")
    assert block[1].endswith("python -m pytest")


def test_the_replay_example_reads_a_file_of_the_repository() -> None:
    """The README's ``replay --input FILE`` example runs as written from a fresh clone: the
    file it names is in the repository, and it prints the bug report's three orphans."""
    text = README.read_text()
    example = re.search(r"(\.venv/bin/python -m store replay [^\n]*\\\n[^\n]*--input [^\n]*)", text)
    assert example, "the README's replay --input example is missing"
    argv = example.group(1).replace("\\\n", " ").split()
    path = argv[argv.index("--input") + 1]
    assert not path.startswith(("/", "..")), f"{path} lies outside the repository"
    assert (README.parent / path).is_file()
    result = subprocess.run(
        [sys.executable, *argv[1:]],
        cwd=README.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    repairs = json.loads(result.stdout)["repairs"]
    orphans = {r["call_id"] for r in repairs if r["kind"] == "orphan_result"}
    assert orphans == {"call_37ac", "call_dc2b", "call_a9df"}
