"""The CLI's progress bars, drawn with rich; the library only reports progress through callbacks."""
from __future__ import annotations

from typing import Any

__all__ = ["TransferBars"]


class TransferBars:
    """One byte-count bar per label (download, weights, upload, ...), started on the first report.

    Starting late means an early error (an invalid plan) prints only its one line.

    Args:
        console: the rich console to draw on.
        transient: remove the bars when they stop.
    """

    def __init__(self, console: Any, *, transient: bool = False) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(TextColumn("{task.description:>9}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=transient)
        self._tasks: dict[str, Any] = {}
        self._stopped = False

    @property
    def labels(self) -> list[str]:
        """The labels reported so far, in order."""
        return list(self._tasks)

    def update(self, done: int, total: int, label: str) -> None:
        """Show ``done`` of ``total`` bytes (0 = unknown total) on ``label``'s bar."""
        if not self._tasks:
            self._progress.start()
        if label not in self._tasks:
            self._tasks[label] = self._progress.add_task(label, total=total or None)
        self._progress.update(self._tasks[label], completed=done, total=total or None)

    def stop(self) -> None:
        """Stop drawing; a no-op when nothing was reported (stopping an unstarted bar prints a newline)."""
        if self._tasks and not self._stopped:
            self._progress.stop()
            self._stopped = True
