"""Privacy: customer pseudonyms and the rules for sensitive body data.

Customer ids are replaced at ingest by a keyed hash (HMAC-SHA256), so curated tables, the
feature store, MLflow and logs never see the retailer's own id; serving applies the same
function to the id it is given. Body measurements are used only for customers who consented,
and only as derived features (see :mod:`pipeline.features.build`); rows of customers without
consent lose them at ingest (:func:`redact_without_consent`), quarantined text too
(:func:`without_body`).

The key (``FITREC_PSEUDONYM_KEY``) is required in the production profile. Rotating it, as an
operator does it:

1. set the new key as ``FITREC_PSEUDONYM_KEY`` and the old one first in
   ``FITREC_PSEUDONYM_PREVIOUS_KEYS`` (for the pipeline and for serving);
2. rebuild from the raw drops: move ``curated/``, ``quarantine/``, ``features/`` and
   ``feast/checkpoints`` aside (an unchanged drop is otherwise skipped), then
   ``fitrec run nightly`` re-ingests every day, rebuilds features, materialises and
   retrains; serving's event log
   names the key of each pseudonym (``pseudonym_key_id``), and ingest re-keys lines made
   under a previous key from the raw ids in the drops (:func:`translation`); sealed text
   opens under any listed key (:func:`unseal`);
3. once the model trained on the new pseudonyms is champion and the online store is
   re-materialised, drop the old key from ``FITREC_PSEUDONYM_PREVIOUS_KEYS``.

Between steps 1 and 3 serving looks a customer up under the new pseudonym and, when the store
has nothing there, under each previous key's (one more Redis round trip for those customers
only), so nobody turns cold start during the rebuild.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Collection, Iterable, Sequence

import orjson
import polars as pl
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PSEUDONYM_PREFIX = "c_"


def pseudonymise(customer_id: str, key: str) -> str:
    """Return the stable pseudonym of one customer id (HMAC-SHA256, 80 bits shown)."""
    return PSEUDONYM_PREFIX + hmac.digest(key.encode(), customer_id.encode(), "sha256").hex()[:20]


def key_id(key: str) -> str:
    """A short public name of a pseudonym key (HMAC of a fixed text under it): says which key
    made a pseudonym (serving's event log records it) without revealing the key."""
    return hmac.digest(key.encode(), b"fitrec pseudonym key id", "sha256").hex()[:8]


def translation(raw_ids: Iterable[str], old_key: str, new_key: str) -> dict[str, str]:
    """Old pseudonym -> new pseudonym for these raw ids (a key rotation: serving logs written
    under the old key are re-keyed at ingest from the raw ids the retailer's drops hold)."""
    return {pseudonymise(i, old_key): pseudonymise(i, new_key) for i in set(raw_ids)}


# Pseudonyms already computed in this process, per key (most customers come back daily).
_KNOWN: dict[str, pl.DataFrame] = {}
_KNOWN_LIMIT = 5_000_000


def pseudonymise_column(frame: pl.DataFrame, column: str, key: str) -> pl.DataFrame:
    """Replace ``column`` by its pseudonyms (nulls stay null: anonymous sessions)."""
    known = _KNOWN.get(key)
    if known is None or known.height > _KNOWN_LIMIT:
        known = pl.DataFrame(schema={"__id": pl.String, "__pseudonym": pl.String})
    ids = frame.get_column(column).cast(pl.String)
    new = ids.drop_nulls().unique().to_frame("__id").join(known, on="__id", how="anti")
    if new.height:
        fresh = new.with_columns(
            pl.Series("__pseudonym", [pseudonymise(v, key) for v in new["__id"]], pl.String)
        )
        known = pl.concat([known, fresh])
        _KNOWN[key] = known
    # Only the id column is joined: the rest of the frame (raw text and all) is not copied.
    pseudonyms = (
        ids.to_frame("__id")
        .join(known, on="__id", how="left", maintain_order="left")
        .get_column("__pseudonym")
    )
    return frame.with_columns(pseudonyms.alias(column))


def redact_without_consent(
    customers: pl.DataFrame, sensitive: Collection[str]
) -> tuple[pl.DataFrame, int]:
    """Drop body measurements of customers who did not consent; returns (frame, rows redacted).

    Args:
        customers: Customer rows with ``body_data_consent``.
        sensitive: The body columns, as the customers' contract declares them
            (``CUSTOMERS.sensitive`` in :mod:`pipeline.data.contracts`, which sits above this).
    """
    no_consent = ~pl.col("body_data_consent")
    redacted = customers.with_columns(
        pl.when(no_consent).then(None).otherwise(pl.col(c)).alias(c) for c in sensitive
    )
    return redacted, int(customers.select(no_consent.sum()).item())


def without_body(text: str, sensitive: Collection[str]) -> str:
    """A raw customer row (JSON text) without its ``sensitive`` (body) columns; other text
    unchanged."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if not isinstance(record, dict):
        return text
    return orjson.dumps({k: v for k, v in record.items() if k not in sensitive}).decode()


# --- sealed text --------------------------------------------------------------------------
# Text that may hold a raw customer id but cannot be parsed to pseudonymise it (a malformed
# quarantined line, say) is kept only sealed: AES-256-GCM under a key derived (HKDF-SHA256)
# from the pseudonym key, so that only whoever holds that secret can read it back.

SEALED_PREFIX = "sealed:v1:"
_SEAL_INFO = b"fitrec sealed text v1"


def _seal_key(key: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO).derive(
        key.encode()
    )


def seal(text: str, key: str) -> str:
    """Encrypt ``text`` (AES-256-GCM) into a printable token.

    The nonce is synthetic (an HMAC of the text under the derived key), so sealing the same
    text twice gives the same token: a re-run of ingest stays byte-identical, and a nonce is
    only ever reused for the very same plaintext."""
    secret = _seal_key(key)
    plain = text.encode("utf-8", "surrogatepass")
    nonce = hmac.digest(secret, plain, "sha256")[:12]
    sealed = AESGCM(secret).encrypt(nonce, plain, None)
    return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(token: str, keys: Sequence[str]) -> str:
    """The text of a :func:`seal` token, trying each key in turn (current key first, then
    keys being rotated out); ``ValueError`` if none of them opens it."""
    if not token.startswith(SEALED_PREFIX):
        raise ValueError("not a sealed token")
    raw = base64.urlsafe_b64decode(token[len(SEALED_PREFIX) :])
    for key in keys:
        try:
            plain = AESGCM(_seal_key(key)).decrypt(raw[:12], raw[12:], None)
        except InvalidTag:
            continue
        return plain.decode("utf-8", "surrogatepass")
    raise ValueError("no key opens this sealed token")
