"""Deterministic identifiers for the demo shop: keyed bijective integer mixers.

Ids are computed, not drawn: an event id is ``mix64(key, user << 28 | seq << 4 | variant)``, so
it depends only on the seed, the user and the event's place in that user's history, never on how
users were grouped into blocks. Both mixers are bijections (a XOR with the key, then the
SplitMix64 / lowbias32 finalisers), so distinct inputs always give distinct ids.
"""

from __future__ import annotations

import numpy as np

_U64 = np.uint64
_M64_1 = _U64(0xBF58476D1CE4E5B9)
_M64_2 = _U64(0x94D049BB133111EB)
_M32_1 = np.uint32(0x7FEB352D)
_M32_2 = np.uint32(0x846CA68B)

# Bits of the id-space layout shared by every event-like id: user, then sequence, then variant.
SEQ_BITS = 24
VARIANT_BITS = 4
MAX_USERS = 1 << (64 - SEQ_BITS - VARIANT_BITS)


def mix64(values: np.ndarray, key: int) -> np.ndarray:
    """Returns the keyed SplitMix64 finaliser of each value (uint64 array, same shape)."""
    z = np.asarray(values, dtype=np.uint64).reshape(-1) ^ _U64(key & 0xFFFFFFFFFFFFFFFF)
    z = (z ^ (z >> _U64(30))) * _M64_1
    z = (z ^ (z >> _U64(27))) * _M64_2
    return z ^ (z >> _U64(31))


def mix32(values: np.ndarray, key: int) -> np.ndarray:
    """Returns the keyed lowbias32 hash of each value (uint32 array); a bijection on 32 bits."""
    z = np.asarray(values, dtype=np.uint64).reshape(-1).astype(np.uint32) ^ np.uint32(key & 0xFFFFFFFF)
    z = z ^ (z >> np.uint32(16))
    z = z * _M32_1
    z = z ^ (z >> np.uint32(15))
    z = z * _M32_2
    return z ^ (z >> np.uint32(16))


def event_key(users: np.ndarray, seqs: np.ndarray, variant: int | np.ndarray = 0) -> np.ndarray:
    """Returns ``user << 28 | seq << 4 | variant``: the order key and id input of a landed line."""
    users = np.asarray(users, dtype=np.uint64)
    seqs = np.asarray(seqs, dtype=np.uint64)
    variant = np.asarray(variant, dtype=np.uint64)
    return (users << _U64(SEQ_BITS + VARIANT_BITS)) | (seqs << _U64(VARIANT_BITS)) | variant


def user_id_strings(users: np.ndarray, key: int) -> list[str]:
    """Returns the shop's user id of each user index: ``u`` and 8 hex digits, unique per index."""
    return [f"u{h:08x}" for h in mix32(users, key).tolist()]
