"""Deterministic, sticky assignment of a unit to a variant.

A unit's bucket is the first 8 bytes of BLAKE2b(salt, unit) read as a number in [0, 1);
the variants own consecutive ranges of that interval in the order they are declared, each
as wide as its share. The same salt and unit give the same variant in every process, on
every machine and after every restart: nothing is stored. A new salt reshuffles every unit
independently of the last experiment (so one test's winners do not carry into the next).

The unit is the *pseudonymised* customer id (or the session id for anonymous traffic): the
raw id is never hashed here, so assignment reveals nothing the pseudonym does not.
"""

from __future__ import annotations

import bisect
import hashlib
from itertools import accumulate

from pipeline.experiments.config import Experiment, Variant

__all__ = ["Assigner", "bucket", "salt_key"]

_SCALE = float(2**64)


def salt_key(salt: str) -> bytes:
    """The BLAKE2b key of a salt (a salt of any length gives a 32-byte key)."""
    return hashlib.blake2b(salt.encode(), digest_size=32, person=b"fitrec-exp").digest()


def bucket(salt: str | bytes, unit: str) -> float:
    """The unit's position in [0, 1) under ``salt`` (uniform over units); ``salt`` may be
    the key :func:`salt_key` made of it already."""
    key = salt if isinstance(salt, bytes) else salt_key(salt)
    digest = hashlib.blake2b(unit.encode(), digest_size=8, key=key).digest()
    return int.from_bytes(digest, "big") / _SCALE


class Assigner:
    """Variant lookup for one experiment: :meth:`variant` is a hash and a bisect."""

    def __init__(self, experiment: Experiment):
        self.experiment = experiment
        self._salt = salt_key(experiment.salt)
        shares = [v.share for v in experiment.variants]
        self._edges = list(accumulate(shares))[:-1]  # the last range closes at 1
        self._variants = experiment.variants

    def variant(self, unit: str) -> Variant:
        """The variant of ``unit`` (a pseudonym or a session id)."""
        return self._variants[bisect.bisect_right(self._edges, bucket(self._salt, unit))]
