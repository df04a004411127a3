"""The README's "Events and merged identities" walkthrough, run exactly as written (only the base
URL points at a fresh emulator), and its printed output compared with the README's."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from tests.conftest import StartEmulator

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Events and merged identities"
DOCUMENTED_BASE = "http://127.0.0.1:8000"


def walkthrough() -> tuple[str, str]:
    """The section's Python block and the text block that shows its output."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    output = re.search(r"```text\n(.*?)```", section, re.DOTALL)
    assert code is not None, "the section lost its code block"
    assert output is not None, "the section lost its output block"
    return code.group(1), output.group(1)


def test_the_readme_walkthrough_prints_what_it_says(start_emulator: StartEmulator) -> None:
    code, expected = walkthrough()
    assert code.count(DOCUMENTED_BASE) == 1
    running = start_emulator()
    printed = io.StringIO()
    program = compile(code.replace(DOCUMENTED_BASE, running.base_url), str(README), "exec")
    with contextlib.redirect_stdout(printed):
        exec(program, {})
    assert printed.getvalue() == expected
