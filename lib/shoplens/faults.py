"""The fault hook: ``SHOPLENS_FAULT`` makes a job kill itself where it hurts, so tests can interrupt it.

``SHOPLENS_FAULT=<job>:<point>:<target>[:<attempt>]``, several comma-separated:

- ``before_commit``, ``during_commit`` (data files written, Delta log entry not yet), ``after_commit``:
  ``target`` is a table (``bronze.events``); the job's driver kills itself with SIGKILL there
  (``shoplens.runs``), on every attempt or only the given one;
- ``after_epoch``: ``target`` is a training process, ``rank<N>``; that Horovod process kills itself
  with SIGKILL at the end of its first epoch of the run (``attempt``: the run's first epoch number,
  1-based, e.g. ``:3`` for the third epoch of training as a whole), after every callback of that
  epoch, so rank 0 has checkpointed it. The driver hands the variable to the training processes.

No Spark or TensorFlow here: the training processes import it too.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

log = logging.getLogger(__name__)

FAULT_ENV_VAR = "SHOPLENS_FAULT"
BEFORE_COMMIT = "before_commit"
DURING_COMMIT = "during_commit"
AFTER_COMMIT = "after_commit"
AFTER_EPOCH = "after_epoch"
FAULT_POINTS = (BEFORE_COMMIT, DURING_COMMIT, AFTER_COMMIT, AFTER_EPOCH)


class FaultSpecError(ValueError):
    """``SHOPLENS_FAULT`` is malformed."""


@dataclass(frozen=True)
class Fault:
    """Kill job ``job`` at ``point`` of ``table`` (a table, or ``rank<N>`` for ``after_epoch``), on
    ``attempt`` only if given (for ``after_epoch``: at that epoch)."""

    job: str
    point: str
    table: str
    attempt: int | None = None

    def fires(self, job: str, point: str, table: str, attempt: int) -> bool:
        return (self.job, self.point, self.table) == (job, point, table) and self.attempt in (None, attempt)


def parse_faults(value: str | None) -> tuple[Fault, ...]:
    """Parses ``SHOPLENS_FAULT``: comma-separated ``job:point:target[:attempt]``."""
    faults = []
    for item in (value or "").split(","):
        if not item.strip():
            continue
        parts = item.strip().split(":")
        if len(parts) not in (3, 4) or parts[1] not in FAULT_POINTS or not parts[0] or not parts[2]:
            raise FaultSpecError(
                f"{FAULT_ENV_VAR} item {item!r} is not <job>:<point>:<table>[:<attempt>] with point one of "
                f"{', '.join(FAULT_POINTS)}"
            )
        if len(parts) == 4 and not parts[3].isdigit():
            raise FaultSpecError(f"{FAULT_ENV_VAR} item {item!r}: the attempt must be a number")
        faults.append(Fault(parts[0], parts[1], parts[2], int(parts[3]) if len(parts) == 4 else None))
    return tuple(faults)


def armed() -> tuple[Fault, ...]:
    """The faults ``SHOPLENS_FAULT`` arms in this process (none when it is unset)."""
    return parse_faults(os.environ.get(FAULT_ENV_VAR))


def kill_self(reason: str) -> None:
    """Logs ``reason``, flushes the log handlers and sends SIGKILL to this process."""
    log.warning("fault hook: %s: SIGKILL to pid %d", reason, os.getpid())
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
