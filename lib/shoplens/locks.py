"""Leased locks as files in the warehouse's own file system, through Hadoop's FileSystem API.

Two kinds guard the jobs' writes (docs/RUNS.md): the run lock of one (run date, job), held for the
whole run, and the commit lock of one table, held around each commit to it. A lock is a small JSON
file under ``runs.lock_dir`` (default ``{warehouse}/_locks/``) naming its holder (job, run date,
attempt, host, pid, Spark app, acquired at, lease). Taking it is one exclusive create, which fails
when the file exists:

- HDFS: ``FileSystem.create(path, overwrite=false)`` is atomic at the NameNode.
- Local (``file:``) paths: Hadoop's local ``create`` checks for the file and then opens it, which
  two processes can both pass; so the lock file is created with ``O_CREAT | O_EXCL``, which is.
- S3 has no exclusive create through S3A: this module refuses ``s3``/``s3a`` warehouses. There,
  Delta's commits need its DynamoDB LogStore, and run locks an external store (DynamoDB, ZooKeeper).

The holder renews its lease by touching the file's modification time every ``heartbeat_s`` (a
daemon thread), so the file is never rewritten while held; a lock whose modification time is older
than its lease belongs to a killed run and is broken (deleted) with a warning by the next run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

UNSUPPORTED_SCHEMES = ("s3", "s3a", "s3n")


class LockTimeout(RuntimeError):
    """Another run held the lock for longer than this run may wait; the message names the holder."""


class LockLost(RuntimeError):
    """This run's lock was broken or replaced while it held it (its lease ran out): it must not write."""


class UnsupportedLockStore(RuntimeError):
    """The warehouse's file system has no exclusive create to build a lock on (S3)."""


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds")


def describe_holder(content: Mapping[str, Any] | None, renewed_ms: int | None) -> str:
    """One line naming who holds a lock: job, run date, attempt, host:pid, Spark app, times."""
    if not content:
        return "an unknown holder (the lock file is empty or being written)"
    renewed = ""
    if renewed_ms is not None:
        renewed = f", lease renewed at {_iso(dt.datetime.fromtimestamp(renewed_ms / 1000, dt.UTC))}"
    return (
        f"job {content.get('job')} run date {content.get('run_date')} attempt {content.get('attempt')} "
        f"on {content.get('host')}:{content.get('pid')} (app {content.get('app_id')}), "
        f"acquired at {content.get('acquired_at')}{renewed}, lease {content.get('lease_s')} s"
    )


class Lock:
    """One leased lock file. ``with Lock(...):`` acquires (waiting up to ``wait_s``) and releases.

    ``owner`` is what the file says about the holder (job, run date, attempt, app id); host, pid,
    acquired_at, lease and a token are added. :meth:`check` raises :class:`LockLost` once the lock is
    no longer surely this holder's, so a writer can refuse to commit without it.
    """

    def __init__(
        self,
        spark: SparkSession,
        path: str,
        owner: Mapping[str, Any],
        *,
        lease_s: float,
        heartbeat_s: float,
        wait_s: float,
        poll_s: float,
    ) -> None:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self.path = path
        self._jvm = jvm
        self._jpath = jvm.org.apache.hadoop.fs.Path(path)
        self._fs = self._jpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[union-attr]
        scheme = self._fs.getScheme()
        if scheme in UNSUPPORTED_SCHEMES:
            raise UnsupportedLockStore(
                f"cannot lock {path}: S3 has no atomic exclusive create. Use Delta's DynamoDB LogStore for "
                "commits and an external lock store for runs (docs/RUNS.md, 'S3')"
            )
        self._local = scheme == "file"
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.token = uuid.uuid4().hex
        self.owner = dict(owner)
        self._held = False
        self._lost: str | None = None
        self._renewed_at = 0.0
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # --- file system ---------------------------------------------------------------------------------
    def _create_exclusive(self, payload: bytes) -> bool:
        self._fs.mkdirs(self._jpath.getParent())
        if self._local:
            try:
                fd = os.open(self._jpath.toUri().getPath(), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
            return True
        try:
            out = self._fs.create(self._jpath, False)
        except Py4JJavaError as err:
            if "FileAlreadyExists" in err.java_exception.getClass().getName():
                return False
            raise
        try:
            out.write(payload)
        finally:
            out.close()
        return True

    def read(self) -> tuple[dict[str, Any] | None, int | None]:
        """Returns the lock file's content (None if empty or unreadable) and modification time in
        ms, or (None, None) when there is no lock file."""
        try:
            status = self._fs.getFileStatus(self._jpath)
            stream = self._fs.open(self._jpath)
        except Py4JJavaError as err:
            if "FileNotFound" in err.java_exception.getClass().getName():
                return None, None
            raise
        try:
            text = self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()
        try:
            content = json.loads(text)
        except ValueError:
            content = None
        return (content if isinstance(content, dict) else None), int(status.getModificationTime())

    def _expired(self, content: Mapping[str, Any] | None, mtime_ms: int) -> bool:
        lease = float(content.get("lease_s", self.lease_s)) if content else self.lease_s
        return time.time() * 1000 - mtime_ms > lease * 1000

    # --- acquire, renew, release ------------------------------------------------------------------------
    def acquire(self) -> None:
        """Takes the lock, breaking an expired one; raises LockTimeout after ``wait_s`` naming the holder."""
        deadline = time.monotonic() + self.wait_s
        waited_for: str | None = None
        while True:
            acquired_at = _utc_now()
            content = {
                **self.owner,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "acquired_at": _iso(acquired_at),
                "lease_s": self.lease_s,
                "lease_expires_at": _iso(acquired_at + dt.timedelta(seconds=self.lease_s)),
                "token": self.token,
            }
            if self._create_exclusive(json.dumps(content, sort_keys=True, default=str).encode()):
                break
            holder, mtime = self.read()
            if mtime is None:
                continue  # released between our create and our read: try again at once
            if self._expired(holder, mtime):
                self._break(holder, mtime)
                continue
            described = describe_holder(holder, mtime)
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"lock {self.path} is held by {described}; waited {self.wait_s:.0f} s. If that run is dead, its "
                    "lock is broken once its lease runs out; if it is alive, let it finish (docs/RUNS.md)"
                )
            if waited_for != described:
                log.info("waiting up to %.0f s for lock %s, held by %s", self.wait_s, self.path, described)
                waited_for = described
            time.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())) or 0.01)
        self._held = True
        self._renewed_at = time.monotonic()
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._renew_loop, name=f"lease {self.path}", daemon=True)
        self._heartbeat.start()
        log.info("acquired lock %s", self.path)

    def _break(self, holder: Mapping[str, Any] | None, mtime: int) -> None:
        # Read again right before deleting: delete only the very file found expired, not a fresh
        # lock another breaker took meanwhile (the window left is a few milliseconds; a holder that
        # lost its file that way finds out at its next renewal, and check() then stops its commits).
        again, mtime_again = self.read()
        if mtime_again != mtime or (again or {}).get("token") != (holder or {}).get("token"):
            return
        log.warning(
            "breaking lock %s: held by %s, not renewed for more than its lease (its run was killed?)",
            self.path, describe_holder(holder, mtime),
        )
        self._fs.delete(self._jpath, False)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                content, mtime = self.read()
                if mtime is None or (content or {}).get("token") != self.token:
                    self._lost = "the lock file is gone"
                    if mtime is not None:
                        self._lost = f"the lock now belongs to {describe_holder(content, mtime)}"
                    log.error("lost lock %s: %s", self.path, self._lost)
                    return
                self._fs.setTimes(self._jpath, int(time.time() * 1000), -1)
                self._renewed_at = time.monotonic()
            except Exception:  # noqa: BLE001 - a failed renewal is retried; check() sees the lease run out
                log.warning("could not renew lock %s", self.path, exc_info=True)

    def check(self) -> None:
        """Raises LockLost unless this lock is held and its lease surely has not run out."""
        if not self._held:
            raise LockLost(f"lock {self.path} is not held")
        if self._lost:
            raise LockLost(f"lock {self.path} was lost: {self._lost}")
        idle = time.monotonic() - self._renewed_at
        if idle > self.lease_s:
            raise LockLost(f"lock {self.path} was not renewed for {idle:.0f} s, beyond its lease of {self.lease_s} s")

    def release(self) -> None:
        """Stops renewing and deletes the lock file if it is still this holder's."""
        if not self._held:
            return
        self._held = False
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        try:
            content, _ = self.read()
            if (content or {}).get("token") == self.token:
                self._fs.delete(self._jpath, False)
                log.info("released lock %s", self.path)
        except Exception:  # noqa: BLE001 - the lease runs out on its own; the job's outcome stands
            log.warning("could not release lock %s; it expires after its lease", self.path, exc_info=True)

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
