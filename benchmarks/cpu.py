"""CPU time a system spends per step: in this process (all its threads) and in the
PostgreSQL backends that serve this process's connections. On a shared machine, rates
move with whatever else runs; CPU time per step barely does, so it tells where a system's
cost is, and whether a change made it cheaper. Linux only (``/proc``); elsewhere it
reports nothing.

The backends are found by their client port: ``pg_stat_activity.client_port`` of every
connection whose port is one of this process's open TCP sockets. A backend that exits
during the run (a connection closed early) takes its CPU time with it, so pools that keep
their connections are measured best; every system here does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import asyncpg

_SOCKET = re.compile(r"socket:\[(\d+)\]")


def _cpu_seconds(stat_path: str) -> float | None:
    """A task's CPU time to the nanosecond (``schedstat``); None if there is no such task
    here (it exited, or the database server runs on another host)."""
    try:
        with open(stat_path) as f:
            return int(f.read().split()[0]) / 1e9
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def backend_cpu_seconds(pid: int) -> float:
    """CPU time of a database backend on this machine (the profiling probes')."""
    seconds = _cpu_seconds(f"/proc/{pid}/schedstat")
    if seconds is None:
        raise RuntimeError(f"no process {pid} on this machine: the server must run here")
    return seconds


def process_cpu_seconds() -> float:
    """CPU time of every thread of this process."""
    tasks = os.listdir("/proc/self/task")
    seconds = (_cpu_seconds(f"/proc/self/task/{tid}/schedstat") for tid in tasks)
    return sum(t for t in seconds if t is not None)


def _has_proc() -> bool:
    return os.path.isdir("/proc/self/task")


def _own_tcp_ports() -> set[int]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            match = _SOCKET.match(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
        if match:
            inodes.add(match[1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass(frozen=True, slots=True)
class CpuSample:
    process: float
    backends: dict[int, float | None]  # backend pid: CPU seconds (None: not on this host)


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU seconds spent between two samples; ``database`` None when the server's CPU
    cannot be read from here (another host), 0 without a server (SQLite)."""

    process: float
    database: float | None


async def sample(dsn: str | None) -> CpuSample | None:
    """This process's CPU time and that of its PostgreSQL backends (``dsn`` None: no
    database server, as with SQLite). None where ``/proc`` is not available."""
    if not _has_proc():
        return None
    backends: dict[int, float | None] = {}
    if dsn is not None:
        ports = _own_tcp_ports()
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT pid, client_port FROM pg_stat_activity WHERE client_port IS NOT NULL"
            )
        finally:
            await conn.close()
        for row in rows:
            if row["client_port"] in ports:
                backends[row["pid"]] = _cpu_seconds(f"/proc/{row['pid']}/schedstat")
    return CpuSample(process_cpu_seconds(), backends)


def used(before: CpuSample | None, after: CpuSample | None) -> CpuUse | None:
    if before is None or after is None:
        return None
    spent = [t - (before.backends.get(pid) or 0.0) if t is not None else None
             for pid, t in after.backends.items()]  # fmt: skip
    database = None if None in spent else sum(t for t in spent if t is not None)
    return CpuUse(after.process - before.process, database)
