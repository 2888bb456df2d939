"""Keyed pseudonyms for user ids: HMAC-SHA256 composed from Spark's built-in functions.

Spark 4.0 has no HMAC function, and a Python UDF per row would be slow: HMAC is
``H((K ^ opad) || H((K ^ ipad) || m))``, so with the key's two padded blocks computed once here,
``sha2``, ``unhex``, ``concat`` and ``encode`` compute it on the JVM (tests compare with ``hmac``).

The key comes from ``$SHOPLENS_PSEUDONYM_KEY`` or from the file ``$SHOPLENS_PSEUDONYM_KEY_FILE``,
never from the repository. Jobs refuse to run without one unless started with ``--demo``, which
uses the published :data:`DEMO_KEY` (so demo pseudonyms are reproducible by anyone) and says so in
the log. The padded key blocks appear as literals in Spark's query plans: keep plan logs as
private as the key.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

KEY_ENV_VAR = "SHOPLENS_PSEUDONYM_KEY"
KEY_FILE_ENV_VAR = "SHOPLENS_PSEUDONYM_KEY_FILE"
# Published on purpose: demo data only. Anyone can recompute demo pseudonyms with it.
DEMO_KEY = b"shoplens-demo-pseudonym-key-not-secret"
_BLOCK = 64  # SHA-256 block size in bytes


class PseudonymKeyMissing(RuntimeError):
    """No pseudonymisation key was configured and the job was not started with --demo."""


def load_key(demo: bool) -> bytes:
    """Returns the pseudonymisation key from the environment, or the demo key with ``demo``."""
    if os.environ.get(KEY_ENV_VAR):
        return os.environ[KEY_ENV_VAR].encode("utf-8")
    if os.environ.get(KEY_FILE_ENV_VAR):
        path = Path(os.environ[KEY_FILE_ENV_VAR])
        if not path.is_file():
            raise PseudonymKeyMissing(f"{KEY_FILE_ENV_VAR}={path} does not exist")
        key = path.read_bytes().strip()
        if not key:
            raise PseudonymKeyMissing(f"{KEY_FILE_ENV_VAR}={path} is empty")
        return key
    if demo:
        log.warning("pseudonymising user ids with the PUBLISHED DEMO KEY (--demo): not for real data")
        return DEMO_KEY
    raise PseudonymKeyMissing(
        f"no pseudonymisation key: set {KEY_ENV_VAR} (the key) or {KEY_FILE_ENV_VAR} (a file holding "
        "it, kept outside the repository), or pass --demo to use the published demo key"
    )


def _padded_blocks(key: bytes) -> tuple[str, str]:
    block = hashlib.sha256(key).digest() if len(key) > _BLOCK else key
    block = block.ljust(_BLOCK, b"\0")
    inner = bytes(b ^ 0x36 for b in block)
    outer = bytes(b ^ 0x5C for b in block)
    return inner.hex(), outer.hex()


def hmac_sha256_hex(value: Column, key: bytes) -> Column:
    """Returns HMAC-SHA256(key, UTF-8 bytes of ``value``) as 64 lowercase hex characters; null in,
    null out."""
    inner_pad, outer_pad = _padded_blocks(key)
    inner = F.sha2(F.concat(F.unhex(F.lit(inner_pad)), F.encode(value, "UTF-8")), 256)
    return F.sha2(F.concat(F.unhex(F.lit(outer_pad)), F.unhex(inner)), 256)
