"""Programs some tests need that pip cannot install (PgBouncer): found on the machine, or
installed from Debian's packages when the suite runs as root on a Debian-like system, so
that the README's test command passes on a fresh machine. Anywhere else a missing program
FAILS its tests with the command that installs it; it never skips them."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Two suites run at once (CI and a developer's) install under one lock; apt-get also
# waits for dpkg's own lock rather than failing at once.
_LOCK = Path(os.environ.get("TMPDIR", "/tmp")) / "turnstore-tests-apt.lock"
_APT_WAIT = ("-o", "DPkg::Lock::Timeout=600")


def _find(program: str) -> str | None:
    for found in (shutil.which(program), f"/usr/sbin/{program}", f"/usr/bin/{program}"):
        if found and os.access(found, os.X_OK):
            return found
    return None


@contextmanager
def _install_lock() -> Iterator[None]:
    with open(_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _apt_install(package: str) -> str:
    """Install ``package`` with apt-get (refreshing the package lists if the first try
    fails); return what apt-get printed, for the failure message."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", *_APT_WAIT, "install", "-y", "-q", package]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode == 0:
        return done.stdout
    subprocess.run(
        ["apt-get", *_APT_WAIT, "update", "-q"], env=env, capture_output=True, timeout=900
    )
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    return done.stdout + done.stderr


def debian_program(program: str, package: str) -> str:
    """The path of ``program``; installed from Debian's ``package`` when it is missing and
    this process may install packages (root, apt-get present). Fails the test otherwise."""
    found = _find(program)
    if found:
        return found
    can_install = os.geteuid() == 0 and shutil.which("apt-get") is not None
    output = ""
    if can_install:
        with _install_lock():
            found = _find(program)
            if found is None:
                output = _apt_install(package)
                found = _find(program)
    if found:
        return found
    how = f"apt-get install {package}" if shutil.which("apt-get") else f"install {package}"
    reason = (
        f"installing it failed: {output.strip().splitlines()[-1] if output.strip() else '?'}"
        if can_install
        else "the suite is not running as root with apt-get, so it cannot install it"
    )
    pytest.fail(
        f"{program} is not installed, so the tests that need it cannot run ({reason}): "
        f"install it ({how}) and run the suite again",
        pytrace=False,
    )
