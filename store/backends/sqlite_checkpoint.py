"""SQLite: WAL checkpoints off the write path.

In WAL mode a commit appends the pages it changed to the ``-wal`` file, and a checkpoint
copies them back into the database file. By default the connection whose commit takes the
WAL past 1,000 pages runs that checkpoint itself, inside its ``COMMIT``. The store's
indexes all lead with the conversation, so a batch of writes on many conversations
changes many pages: the writer checkpointed every dozen batches or so, and ``COMMIT`` was
the largest single cost of a write (17% of the process's samples under the benchmark's
load, more than every statement of the batches together).

So the store's writer checkpoints only as a backstop, past ``BACKSTOP_PAGES``, and a
``Checkpointer`` thread runs PASSIVE checkpoints on its own connection while the writer
goes on. The writer wakes it every ``EVERY_COMMITS`` commits; it runs one checkpoint at a
time, and a wake that comes while one runs starts one more after it. SQLite releases the
GIL while it copies pages, so the copying runs beside the event loop and the writer.

A PASSIVE checkpoint never blocks the writer or a reader: it copies what it can and
leaves the rest. It cannot restart the WAL while writes keep coming, so under constant
load the WAL grows until the writer's backstop checkpoint, which finds most pages already
copied, completes it; the next commit then starts the WAL from its beginning. The WAL
stays under about ``BACKSTOP_PAGES`` pages (40 MB with 4 KB pages).
"""

from __future__ import annotations

import sqlite3
import threading

#: the writer connection's ``wal_autocheckpoint``: the WAL's bound, in pages
BACKSTOP_PAGES = 10_000
#: the writer's commits between two wakes of the checkpointer. A checkpoint copies each
#: page once however often it changed since the last one, so checkpoints that come too
#: often copy the same index pages again and again. In the benchmark (python -m
#: benchmarks, SQLite, W=32 C=64), the process spent 950-990 us of CPU per step with a
#: checkpoint after every commit, 680 with SQLite's default, and 720-770 both with one
#: every 64 commits and with the backstop alone; the thread kept p99 at 43-46 ms against
#: 54-62 ms for the backstop alone.
EVERY_COMMITS = 64


class Checkpointer:
    """A daemon thread that checkpoints the WAL of ``path`` when woken."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._commits = 0  # since the last wake
        #: checkpoints run, for the curious (and the tests)
        self.checkpoints = 0
        #: the last error a checkpoint raised (it is retried at the next wake)
        self.last_error: BaseException | None = None

    def committed(self) -> None:
        """Called by the writer after each commit: checkpoint soon."""
        self._commits += 1
        if self._commits < EVERY_COMMITS:
            return
        self._commits = 0
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="turnstore-sqlite-checkpoint", daemon=True
            )
            self._thread.start()
        self._wake.set()

    def close(self) -> None:
        """Stop the thread, after the checkpoint it is running, if any."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:  # a failure is kept and tried again at the next wake
                    if conn is None:
                        conn = sqlite3.connect(
                            self._path, timeout=self._busy_timeout, isolation_level=None
                        )
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the writer's backstop still bounds the WAL
                    self.last_error = exc
                else:
                    self.checkpoints += 1
        finally:
            if conn is not None:
                conn.close()
