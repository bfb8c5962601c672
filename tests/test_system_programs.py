"""A program the suite needs and cannot install fails its tests, saying how to install it."""

from __future__ import annotations

import pytest

from . import system_programs
from .system_programs import debian_program


def test_a_present_program_is_found() -> None:
    assert debian_program("sh", "dash").endswith("/sh")


def test_a_missing_program_that_cannot_be_installed_fails_saying_how(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(system_programs.os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.fail.Exception) as failed:
        debian_program("turnstore-no-such-program", "turnstore-no-such-package")
    message = str(failed.value)
    assert "turnstore-no-such-program is not installed" in message
    assert "install turnstore-no-such-package" in message
    assert "not running as root" in message
