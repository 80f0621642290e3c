"""Crypto-shredding primitives: master keys, per-customer data keys, sealed personal fields.

Pure: no I/O, no settings read, no logging. The key store (shared/keys.py) keeps the wrapped
data keys in PostgreSQL; this module only does the cryptography.

Two layers, so a master key can rotate without touching a single message:

* a **data key** (DEK, 32 random bytes, AES-256-GCM) per customer, identified on the wire by
  an opaque `kid`; erasing the customer deletes it, and every message sealed with it becomes
  unreadable wherever it is stored (topics, the DLQ, backups of either);
* **master keys** (from settings, id -> 32 bytes, first one active) wrap the data keys at
  rest. Rotation re-wraps the data keys under the new master key; sealed messages never
  change.

A sealed field travels as ``{"kid": "...", "ciphertext": "<base64url nonce|ct|tag>"}``. The
associated data binds it to its kid, its customer and its purpose, so a sealed blob moved to
another customer or event type fails authentication.

No exception raised here carries a plaintext value, a key, or a customer id.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import ValidationError

from shared.events import CustomerDetails, EnvelopeBase, SealedPII

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")

#: The personal fields of each payload that travel sealed (DESIGN.md §2 marks them PII).
SEALED_FIELDS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "customer.registered": ("name", "phone", "email", "national_id", "birth_date"),
    "customer.updated": ("name", "phone", "email", "national_id", "birth_date"),
    "feedback.submitted": ("text",),
})


class SealError(Exception):
    """A sealed field or wrapped key cannot be opened. Never contains personal data."""


# ------------------------------------------------------------------ encoding helpers


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def unb64url(text: str, *, what: str) -> bytes:
    text = text.strip()
    if not _B64URL.fullmatch(text):
        raise SealError(f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise SealError(f"{what} is not base64url") from None


def new_kid() -> str:
    """An opaque id for a customer's data key: says nothing about the customer.

    >>> kid = new_kid(); kid.startswith("dk-") and len(kid) == 27
    True
    """
    return "dk-" + os.urandom(12).hex()


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


# ------------------------------------------------------------------ master keys


class MasterKeys:
    """Key-encryption keys by id; the first (active) wraps, all of them unwrap.

    >>> keys = MasterKeys.from_setting(DEV_MASTER_KEYS_SETTING)
    >>> keys.active_id, keys.ids
    ('dev-master1', ('dev-master1',))
    >>> keys
    MasterKeys(active='dev-master1', ids=('dev-master1',))
    """

    __slots__ = ("_active", "_aeads")

    def __init__(self, keys: Mapping[str, bytes], *, active: str) -> None:
        if not keys or active not in keys:
            raise ValueError("master keys need at least one key and an active id among them")
        aeads: dict[str, AESGCM] = {}
        for key_id, key in {active: keys[active], **keys}.items():
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"master key id {key_id!r} must be 1-32 of A-Z a-z 0-9 . _ -")
            if len(key) != KEY_BYTES:
                raise ValueError(f"master key {key_id!r} is {len(key)} bytes; 32 are required")
            aeads[key_id] = AESGCM(bytes(key))
        self._aeads = aeads
        self._active = active

    @classmethod
    def from_setting(cls, text: str) -> MasterKeys:
        """``"m2:<base64url 32 bytes>,m1:<...>"``; the first is active. Errors name ids only."""
        keys: dict[str, bytes] = {}
        for position, entry in enumerate(text.split(","), start=1):
            key_id, colon, encoded = entry.strip().partition(":")
            if not colon or not key_id.strip():
                raise ValueError(f"master key entry {position} is not 'key_id:base64url_key'")
            key_id = key_id.strip()
            if key_id in keys:
                raise ValueError(f"master key id {key_id!r} appears more than once")
            try:
                keys[key_id] = unb64url(encoded, what=f"master key {key_id!r}")
            except SealError as exc:
                raise ValueError(str(exc)) from None
        return cls(keys, active=next(iter(keys)))

    @property
    def active_id(self) -> str:
        return self._active

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._aeads)

    def wrap(self, data_key: bytes, *, kid: str, customer_id: str) -> tuple[str, bytes]:
        """(master key id, nonce|wrapped key) under the active master key."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aeads[self._active].encrypt(nonce, data_key, _wrap_aad(kid, customer_id))
        return self._active, nonce + sealed

    def unwrap(self, master_id: str, wrapped: bytes, *, kid: str, customer_id: str) -> bytes:
        aead = self._aeads.get(master_id)
        if aead is None:
            raise SealError(f"master key id {master_id!r} is not configured")
        try:
            return aead.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(kid, customer_id)
            )
        except InvalidTag:
            raise SealError(f"data key {kid!r} failed authentication") from None

    def __repr__(self) -> str:
        return f"MasterKeys(active={self._active!r}, ids={self.ids!r})"


def _wrap_aad(kid: str, customer_id: str) -> bytes:
    return b"tenure.dek.v1|" + kid.encode() + b"|" + customer_id.encode()


# ------------------------------------------------------------------ sealing


def _seal_aad(kid: str, customer_id: str, purpose: str) -> bytes:
    return b"tenure.sealed.v1|" + kid.encode() + b"|" + purpose.encode() + b"|" + (
        customer_id.encode()
    )


def seal_fields(
    fields: Mapping[str, Any], *, kid: str, data_key: bytes, customer_id: str, purpose: str
) -> SealedPII:
    """Encrypt a JSON object of personal fields for one customer and one purpose.

    >>> key = new_data_key()
    >>> box = seal_fields({"name": "Ada"}, kid="dk-1", data_key=key, customer_id="C1",
    ...                   purpose="customer.registered")
    >>> open_fields(box, data_key=key, customer_id="C1", purpose="customer.registered")
    {'name': 'Ada'}
    >>> open_fields(box, data_key=key, customer_id="C2", purpose="customer.registered")
    Traceback (most recent call last):
    ...
    shared.crypto.SealError: sealed personal data under 'dk-1' failed authentication \
(tampered, or bound to another customer or event type)
    """
    nonce = os.urandom(NONCE_BYTES)
    plaintext = orjson.dumps(dict(fields))
    sealed = AESGCM(data_key).encrypt(nonce, plaintext, _seal_aad(kid, customer_id, purpose))
    return SealedPII(kid=kid, ciphertext=b64url(nonce + sealed))


def open_fields(
    box: SealedPII, *, data_key: bytes, customer_id: str, purpose: str
) -> dict[str, Any]:
    raw = unb64url(box.ciphertext, what="sealed ciphertext")
    if len(raw) < NONCE_BYTES + 16:
        raise SealError("sealed ciphertext is truncated")
    try:
        plaintext = AESGCM(data_key).decrypt(
            raw[:NONCE_BYTES], raw[NONCE_BYTES:], _seal_aad(box.kid, customer_id, purpose)
        )
    except InvalidTag:
        raise SealError(
            f"sealed personal data under {box.kid!r} failed authentication "
            "(tampered, or bound to another customer or event type)"
        ) from None
    value = orjson.loads(plaintext)
    if not isinstance(value, dict):
        raise SealError("sealed personal data is not a JSON object")
    return value


def personal_fields(event: EnvelopeBase) -> dict[str, Any]:
    """The event's plaintext personal fields that are set (JSON-ready), or {}."""
    names = SEALED_FIELDS.get(event.event_type)  # type: ignore[attr-defined]
    if not names:
        return {}
    payload = event.payload.model_dump(mode="json")  # type: ignore[attr-defined]
    return {name: payload[name] for name in names if payload.get(name) is not None}


def seal_event(event: EnvelopeBase, *, kid: str, data_key: bytes) -> EnvelopeBase:
    """The event with its personal fields replaced by one sealed field (unchanged if none)."""
    fields = personal_fields(event)
    if not fields:
        return event
    box = seal_fields(fields, kid=kid, data_key=data_key, customer_id=event.customer_id,
                      purpose=event.event_type)  # type: ignore[attr-defined]
    cleared = {name: None for name in fields}
    payload: Any = event.payload  # type: ignore[attr-defined]
    return event.model_copy(
        update={"payload": payload.model_copy(update={**cleared, "sealed": box})}
    )


def withhold_personal_fields(event: EnvelopeBase) -> EnvelopeBase:
    """The event without its personal fields: for a customer whose keys were shredded."""
    fields = personal_fields(event)
    if not fields:
        return event
    payload: Any = event.payload  # type: ignore[attr-defined]
    return event.model_copy(
        update={"payload": payload.model_copy(update={name: None for name in fields})}
    )


def unsealed_details(details: CustomerDetails, opened: Mapping[str, Any]) -> CustomerDetails:
    """CustomerDetails with the opened fields in place of the sealed one, validated again."""
    allowed = SEALED_FIELDS["customer.registered"]
    unknown = sorted(set(opened) - set(allowed))
    if unknown:
        raise SealError(f"sealed personal data holds unexpected fields {unknown}")
    data = details.model_dump(mode="json", exclude={"sealed"})
    data.update(opened)
    try:
        return CustomerDetails.model_validate(data)
    except ValidationError as exc:
        # Name the fields and the rules, never the values (this reason goes to the DLQ).
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise SealError(f"sealed personal data breaks the contract: {reasons}") from None


def needs_sealing(event: EnvelopeBase) -> bool:
    return bool(personal_fields(event))



# ------------------------------------------------------------------ dev-only master key
#
# DEV ONLY: derived from a public label, protects nothing; production sets TENURE_MASTER_KEYS
# (from a KMS or secret store). `uses_dev_key` lets tooling warn.


def _dev_key(purpose: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=f"tenure dev-only {purpose}".encode())
    return hkdf.derive(b"tenure-dev-only-not-a-secret")


DEV_MASTER_KEYS_SETTING: Final = "dev-master1:" + b64url(_dev_key("master key 1"))
