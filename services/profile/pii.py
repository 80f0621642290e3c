"""Personal-data protection for profile: field encryption, key rotation, blind indexes, masking.

Pure: no I/O, no settings read, no logging. Keys come in as setting strings or bytes.

Field encryption (AES-256-GCM) tokens are self-describing::

    version (1 byte, 0x01) | key id length (1 byte) | key id (ASCII) | nonce (12 bytes)
    | ciphertext + 16-byte tag

The associated data is the token header (version and key id) plus the field name and the
customer id, each length-prefixed, so a token cannot be moved to another field or customer,
nor relabelled with another key id, without failing authentication.

No exception raised here carries a plaintext value, a key, or a customer id: only field
names, key ids and counts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import unicodedata
from collections.abc import Mapping
from datetime import date
from types import MappingProxyType
from typing import Final, Literal, overload

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "DEV_BLIND_INDEX_KEY",
    "DEV_BLIND_INDEX_KEY_SETTING",
    "DEV_KEYRING",
    "DEV_KEYRING_SETTING",
    "BlindIndex",
    "FieldCipher",
    "IndexKind",
    "Keyring",
    "PIIError",
    "UnknownKeyError",
    "key_id_of",
    "mask_date",
    "mask_email",
    "mask_name",
    "mask_national_id",
    "mask_phone",
    "normalise_email",
    "normalise_national_id",
    "normalise_phone",
]

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
TOKEN_VERSION: Final = 1
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_COUNTRY_CODE = re.compile(r"\+[1-9][0-9]{0,2}")
_MAX_AAD_PART = 0xFFFF


class PIIError(Exception):
    """A token cannot be decrypted or read. The message never contains personal data."""


class UnknownKeyError(PIIError):
    """The token names a key id the keyring does not hold (e.g. retired after rotation)."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"key id {key_id!r} is not in the keyring")
        self.key_id = key_id


# ------------------------------------------------------------------ keys


def _decode_key(key_id: str, encoded: str, *, what: str) -> bytes:
    """base64url (padding optional) to exactly 32 bytes; errors name `key_id`, never the key."""
    encoded = encoded.strip()
    if not _BASE64URL.fullmatch(encoded):
        raise ValueError(
            f"{what} {key_id!r} is not valid base64url (alphabet A-Z a-z 0-9 - _, no '+' or '/')"
        )
    padded = encoded.rstrip("=") + "=" * (-len(encoded.rstrip("=")) % 4)
    try:
        key = base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} {key_id!r} is not valid base64url") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{what} {key_id!r} decodes to {len(key)} bytes; {KEY_BYTES} are required")
    return key


def _encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


def _check_key_id(key_id: str) -> None:
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError(
            f"key id {key_id!r} must be 1-32 characters of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )


class Keyring:
    """Data-encryption keys by key id; the active one encrypts, all of them decrypt.

    Rotation: put a new key first (active) and keep the old ones until every token has been
    re-encrypted (`FieldCipher.reencrypt`), then drop them. The repr shows key ids only.

    >>> ring = Keyring.generate("k2")
    >>> ring.active_key_id, ring.key_ids
    ('k2', ('k2',))
    >>> ring
    Keyring(active='k2', key_ids=('k2',))
    """

    __slots__ = ("_active", "_keys")

    def __init__(self, keys: Mapping[str, bytes], *, active: str) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        for key_id, key in keys.items():
            _check_key_id(key_id)
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} is {len(key)} bytes; {KEY_BYTES} are required")
        if active not in keys:
            raise ValueError(f"active key id {active!r} is not among the keys")
        # Active first, so key_ids reads like the setting string.
        ordered = {active: bytes(keys[active])}
        ordered.update((key_id, bytes(key)) for key_id, key in keys.items() if key_id != active)
        self._keys: Mapping[str, bytes] = MappingProxyType(ordered)
        self._active = active

    @classmethod
    def from_setting(cls, text: str) -> Keyring:
        """Parse ``"k2:<base64url 32 bytes>,k1:<base64url 32 bytes>"``; the first is active.

        >>> Keyring.from_setting(DEV_KEYRING_SETTING).key_ids
        ('dev1',)
        >>> Keyring.from_setting("k1:c2hvcnQ")
        Traceback (most recent call last):
        ...
        ValueError: key 'k1' decodes to 5 bytes; 32 are required
        """
        if not text.strip():
            raise ValueError("keyring setting is empty; expected 'key_id:base64url_key,...'")
        keys: dict[str, bytes] = {}
        for position, entry in enumerate(text.split(","), start=1):
            key_id, colon, encoded = entry.strip().partition(":")
            key_id = key_id.strip()
            if not entry.strip():
                raise ValueError(f"keyring setting entry {position} is empty")
            if not colon or not key_id:
                # The entry is not echoed: it may be a bare key.
                raise ValueError(f"keyring setting entry {position} is not 'key_id:base64url_key'")
            _check_key_id(key_id)
            if key_id in keys:
                raise ValueError(f"key id {key_id!r} appears more than once in the keyring setting")
            keys[key_id] = _decode_key(key_id, encoded, what="key")
        return cls(keys, active=next(iter(keys)))

    @classmethod
    def generate(cls, key_id: str = "k1") -> Keyring:
        """A keyring with one fresh random key (dev and tests; production keys come from a KMS)."""
        return cls({key_id: AESGCM.generate_key(bit_length=256)}, active=key_id)

    def to_setting(self) -> str:
        """The setting string for this keyring (active first). It contains the secret keys."""
        return ",".join(f"{key_id}:{_encode_key(key)}" for key_id, key in self._keys.items())

    @property
    def active_key_id(self) -> str:
        return self._active

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, the active one first."""
        return tuple(self._keys)

    def key(self, key_id: str) -> bytes:
        """The key bytes for `key_id`; `UnknownKeyError` if the keyring does not hold it."""
        try:
            return self._keys[key_id]
        except KeyError:
            raise UnknownKeyError(key_id) from None

    @property
    def uses_dev_key(self) -> bool:
        """True when any key is the public dev key: a production bootstrap should refuse it."""
        return any(hmac.compare_digest(key, _DEV_DATA_KEY) for key in self._keys.values())

    def __repr__(self) -> str:
        return f"Keyring(active={self._active!r}, key_ids={self.key_ids!r})"


# ------------------------------------------------------------------ field encryption


def _parse_token(token: bytes) -> tuple[bytes, str, bytes, bytes]:
    """Split a token into (header, key id, nonce, ciphertext with tag)."""
    token = bytes(token)
    if len(token) < 2:
        raise PIIError("token is truncated")
    if token[0] != TOKEN_VERSION:
        raise PIIError(f"unsupported token version {token[0]}")
    key_id_end = 2 + token[1]
    if len(token) < key_id_end + NONCE_BYTES + TAG_BYTES:
        raise PIIError("token is truncated")
    try:
        key_id = token[2:key_id_end].decode("ascii")
    except UnicodeDecodeError:
        raise PIIError("token key id is not ASCII") from None
    if not _KEY_ID.fullmatch(key_id):
        raise PIIError("token key id is malformed")
    nonce_end = key_id_end + NONCE_BYTES
    return token[:key_id_end], key_id, token[key_id_end:nonce_end], token[nonce_end:]


def key_id_of(token: bytes) -> str:
    """The key id a token was encrypted with, without decrypting it (for rotation jobs).

    >>> key_id_of(FieldCipher(DEV_KEYRING).encrypt("x", field="name", customer_id="c-1"))
    'dev1'
    """
    return _parse_token(token)[1]


def _length_prefixed(label: str, value: str) -> bytes:
    encoded = value.encode("utf-8")
    if not encoded:
        raise ValueError(f"{label} must not be empty")
    if len(encoded) > _MAX_AAD_PART:
        raise ValueError(f"{label} is longer than {_MAX_AAD_PART} bytes")
    return len(encoded).to_bytes(2, "big") + encoded


def _associated_data(header: bytes, field: str, customer_id: str) -> bytes:
    return header + _length_prefixed("field", field) + _length_prefixed("customer_id", customer_id)


class FieldCipher:
    """AES-256-GCM encryption of one personal field of one customer.

    >>> cipher = FieldCipher(DEV_KEYRING)
    >>> token = cipher.encrypt("+447700900123", field="phone", customer_id="c-42")
    >>> cipher.decrypt(token, field="phone", customer_id="c-42")
    '+447700900123'
    >>> cipher.decrypt(token, field="email", customer_id="c-42")
    Traceback (most recent call last):
    ...
    services.profile.pii.PIIError: token for field 'email' failed authentication \
(tampered, or bound to another field or customer)
    """

    __slots__ = ("_aeads", "_keyring")

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._aeads = {key_id: AESGCM(keyring.key(key_id)) for key_id in keyring.key_ids}

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def encrypt(self, value: str, *, field: str, customer_id: str) -> bytes:
        """Encrypt `value` under the active key, bound to `field` and `customer_id`."""
        key_id = self._keyring.active_key_id
        encoded_id = key_id.encode("ascii")
        header = bytes([TOKEN_VERSION, len(encoded_id)]) + encoded_id
        nonce = os.urandom(NONCE_BYTES)
        aad = _associated_data(header, field, customer_id)
        return header + nonce + self._aeads[key_id].encrypt(nonce, value.encode("utf-8"), aad)

    def decrypt(self, token: bytes, *, field: str, customer_id: str) -> str:
        """The plaintext, or `PIIError` on an unknown key id, tampering, or wrong field/customer."""
        header, key_id, nonce, sealed = _parse_token(token)
        aead = self._aeads.get(key_id)
        if aead is None:
            raise UnknownKeyError(key_id)
        aad = _associated_data(header, field, customer_id)
        try:
            plaintext = aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise PIIError(
                f"token for field {field!r} failed authentication "
                "(tampered, or bound to another field or customer)"
            ) from None
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:
            raise PIIError(f"token for field {field!r} does not hold UTF-8 text") from None

    def needs_reencryption(self, token: bytes) -> bool:
        """True when the token was not encrypted with the active key."""
        return key_id_of(token) != self._keyring.active_key_id

    def reencrypt(self, token: bytes, *, field: str, customer_id: str) -> bytes:
        """The token under the active key; returned unchanged when it already uses it."""
        if not self.needs_reencryption(token):
            return bytes(token)
        value = self.decrypt(token, field=field, customer_id=customer_id)
        return self.encrypt(value, field=field, customer_id=customer_id)

    def __repr__(self) -> str:
        return f"FieldCipher({self._keyring!r})"


# ------------------------------------------------------------------ blind index

IndexKind = Literal["phone", "national_id", "email"]
_INDEX_KINDS: Final[frozenset[str]] = frozenset({"phone", "national_id", "email"})
_PHONE_PUNCTUATION = re.compile(r"[\s\-().]")


def normalise_phone(value: str, *, default_country_code: str = "+44") -> str:
    """E.164-ish form: digits with a leading '+' when the country is known.

    Spaces, dashes, parentheses and dots go; a UK-style "(0)" after a country code goes;
    "00" becomes "+"; a national number with a single leading 0 takes `default_country_code`
    in place of the 0. Digits with neither prefix are kept as they are (their country is
    unknown). Full-width digits are folded to ASCII (NFKC).

    >>> normalise_phone("+44 (0)7700 900-123")
    '+447700900123'
    >>> normalise_phone("0044 7700 900123"), normalise_phone("07700.900123")
    ('+447700900123', '+447700900123')
    >>> normalise_phone("030 1234567", default_country_code="+49")
    '+49301234567'
    >>> normalise_phone("phone me")
    Traceback (most recent call last):
    ...
    ValueError: phone number may hold only digits, a leading '+', spaces, - ( ) and .
    """
    if not _COUNTRY_CODE.fullmatch(default_country_code):
        raise ValueError("default_country_code must look like '+44': '+' and 1-3 digits")
    text = unicodedata.normalize("NFKC", value).replace("(0)", "")
    text = _PHONE_PUNCTUATION.sub("", text)
    plus, digits = ("+", text[1:]) if text.startswith("+") else ("", text)
    if not digits:
        raise ValueError("phone number has no digits")
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError("phone number may hold only digits, a leading '+', spaces, - ( ) and .")
    if plus:
        return plus + digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    if digits.startswith("0"):
        return default_country_code + digits[1:]
    return digits


def normalise_national_id(value: str) -> str:
    """Upper case without whitespace or dashes (NFKC-folded).

    >>> normalise_national_id(" qq 12-34-56 c ")
    'QQ123456C'
    """
    normalised = re.sub(r"[\s\-]", "", unicodedata.normalize("NFKC", value)).upper()
    if not normalised:
        raise ValueError("national id is empty")
    return normalised


def normalise_email(value: str) -> str:
    """Trimmed and lower-cased (NFKC-folded).

    >>> normalise_email("  Ada@Example.COM ")
    'ada@example.com'
    """
    normalised = unicodedata.normalize("NFKC", value).strip().lower()
    if not normalised:
        raise ValueError("e-mail is empty")
    return normalised


class BlindIndex:
    """Keyed, deterministic search index: HMAC-SHA256 over a kind-separated normalised value.

    Equal values (after normalisation) give equal 32-byte indexes, so a row is found by phone
    or national id without decrypting every row; without the key an index reveals nothing
    and cannot be brute-forced offline. Its key must differ from the encryption keys.

    >>> blind = BlindIndex(DEV_BLIND_INDEX_KEY)
    >>> blind.index("phone", "+44 7700 900123") == blind.index("phone", "07700-900123")
    True
    >>> len(blind.index("email", "ada@example.com"))
    32
    """

    __slots__ = ("_default_country_code", "_key")

    def __init__(self, key: bytes, *, default_country_code: str = "+44") -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"blind index key is {len(key)} bytes; {KEY_BYTES} are required")
        if not _COUNTRY_CODE.fullmatch(default_country_code):
            raise ValueError("default_country_code must look like '+44': '+' and 1-3 digits")
        self._key = bytes(key)
        self._default_country_code = default_country_code

    @classmethod
    def from_setting(cls, text: str, *, default_country_code: str = "+44") -> BlindIndex:
        """Build from a base64url-encoded 32-byte key (padding optional)."""
        if not text.strip():
            raise ValueError("blind index key setting is empty")
        key = _decode_key("blind-index", text, what="blind index key")
        return cls(key, default_country_code=default_country_code)

    @property
    def default_country_code(self) -> str:
        return self._default_country_code

    @property
    def uses_dev_key(self) -> bool:
        """True for the public dev key: a production bootstrap should refuse it."""
        return hmac.compare_digest(self._key, DEV_BLIND_INDEX_KEY)

    def normalise(self, kind: IndexKind, value: str) -> str:
        """The normalised form of `value` that `index` hashes."""
        if kind == "phone":
            return normalise_phone(value, default_country_code=self._default_country_code)
        if kind == "national_id":
            return normalise_national_id(value)
        if kind == "email":
            return normalise_email(value)
        raise ValueError(
            f"unknown blind index kind {kind!r}; expected one of {sorted(_INDEX_KINDS)}"
        )

    def index(self, kind: IndexKind, value: str) -> bytes:
        """32-byte HMAC-SHA256 of ``"tenure.blind-index.v1|<kind>|<normalised value>"``."""
        normalised = self.normalise(kind, value)
        message = f"tenure.blind-index.v1|{kind}|{normalised}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"BlindIndex(default_country_code={self._default_country_code!r})"


# ------------------------------------------------------------------ masking
#
# Masks keep just enough for a caller without pii:read to recognise a record over the phone
# ("your number ending 123"): initials, the country code, the last digits, the e-mail domain.
# They keep the length of what they hide, as the examples the product asked for do. They
# never raise on odd input: anything they cannot read is masked whole.

# ITU country calling codes are prefix-free: these are the 1- and 2-digit ones, all others
# have 3 digits.
_ONE_DIGIT_CODES: Final = frozenset({"1", "7"})
_TWO_DIGIT_CODES: Final = frozenset(
    str(code)
    for code in (
        20, 27, *range(30, 35), 36, 39, 40, 41, *range(43, 50), *range(51, 59),
        *range(60, 67), 81, 82, 84, 86, *range(90, 96), 98,
    )
)  # fmt: skip


def _country_code_length(digits: str) -> int:
    if digits[:1] in _ONE_DIGIT_CODES:
        return 1
    if digits[:2] in _TWO_DIGIT_CODES:
        return 2
    return 3


@overload
def mask_name(value: None) -> None: ...
@overload
def mask_name(value: str) -> str: ...
def mask_name(value: str | None) -> str | None:
    """Each word keeps its initial, the rest becomes '*'; spacing is kept.

    >>> mask_name("Ada Lovelace")
    'A** L*******'
    >>> mask_name("José  María"), mask_name(None)
    ('J***  M****', None)
    """
    if value is None:
        return None
    return re.sub(r"\S+", lambda word: word[0][0] + "*" * (len(word[0]) - 1), value)


@overload
def mask_phone(value: None) -> None: ...
@overload
def mask_phone(value: str) -> str: ...
def mask_phone(value: str | None) -> str | None:
    """International numbers keep '+', the country code and the last 3 digits.

    A number without a '+' keeps only its last 3 digits; one too short to hide at least 5
    digits shows none; anything that is not a phone number is masked whole.

    >>> mask_phone("+447700900123")
    '+44*******123'
    >>> mask_phone("+1 (415) 555-0100"), mask_phone("07700 900123")
    ('+1*******100', '********123')
    >>> mask_phone("+4412"), mask_phone("call me"), mask_phone(None)
    ('+44**', '*******', None)
    """
    if value is None:
        return None
    text = _PHONE_PUNCTUATION.sub("", unicodedata.normalize("NFKC", value).replace("(0)", ""))
    plus, digits = ("+", text[1:]) if text.startswith("+") else ("", text)
    if not digits or not (digits.isascii() and digits.isdigit()):
        return "*" * len(value)
    shown_head = plus + digits[: _country_code_length(digits)] if plus else ""
    rest = digits[len(shown_head) - len(plus) :]
    tail = rest[-3:] if len(rest) - 3 >= 5 else ""
    return shown_head + "*" * (len(rest) - len(tail)) + tail


@overload
def mask_email(value: None) -> None: ...
@overload
def mask_email(value: str) -> str: ...
def mask_email(value: str | None) -> str | None:
    """The local part keeps its first character (none if it has only one); the domain stays.

    >>> mask_email("ada@example.com")
    'a**@example.com'
    >>> mask_email("a@example.com"), mask_email("not-an-email"), mask_email(None)
    ('*@example.com', '************', None)
    """
    if value is None:
        return None
    local, at, domain = value.strip().rpartition("@")
    if not at or not local or not domain:
        return "*" * len(value)
    shown = local[0] if len(local) > 1 else ""
    return shown + "*" * (len(local) - len(shown)) + "@" + domain


@overload
def mask_national_id(value: None) -> None: ...
@overload
def mask_national_id(value: str) -> str: ...
def mask_national_id(value: str | None) -> str | None:
    """Normalised (upper case, no spaces or dashes), keeping the last 4 characters.

    An id shorter than 8 characters is masked whole, so at least 4 stay hidden.

    >>> mask_national_id("QQ 12 34 56 C")
    '*****456C'
    >>> mask_national_id("AB12"), mask_national_id(None)
    ('****', None)
    """
    if value is None:
        return None
    normalised = re.sub(r"[\s\-]", "", unicodedata.normalize("NFKC", value)).upper()
    tail = normalised[-4:] if len(normalised) >= 8 else ""
    return "*" * (len(normalised) - len(tail)) + tail


@overload
def mask_date(value: None, *, keep_year: bool = False) -> None: ...
@overload
def mask_date(value: date, *, keep_year: bool = False) -> str: ...
def mask_date(value: date | None, *, keep_year: bool = False) -> str | None:
    """ISO shape with every digit hidden, or only the year shown (`keep_year`, e.g. for age).

    >>> mask_date(date(1815, 12, 10)), mask_date(date(1815, 12, 10), keep_year=True)
    ('****-**-**', '1815-**-**')
    >>> mask_date(None)
    """
    if value is None:
        return None
    return f"{value.year:04d}-**-**" if keep_year else "****-**-**"


# ------------------------------------------------------------------ dev-only keys
#
# DEV ONLY. Derived from a public label, so anyone can recompute them: they protect nothing.
# They exist so `./dev`, tests and demos run without a secret store. Production settings must
# supply real keys; `Keyring.uses_dev_key` / `BlindIndex.uses_dev_key` let bootstrap refuse.


def _derive_dev_key(purpose: str) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=None,
        info=f"tenure dev-only {purpose}".encode(),
    )
    return hkdf.derive(b"tenure-dev-only-not-a-secret")


_DEV_DATA_KEY: Final = _derive_dev_key("pii data key dev1")
#: DEV ONLY public keyring (key id "dev1", so tokens made with it are recognisable).
DEV_KEYRING: Final = Keyring({"dev1": _DEV_DATA_KEY}, active="dev1")
DEV_KEYRING_SETTING: Final = DEV_KEYRING.to_setting()
#: DEV ONLY public blind index key.
DEV_BLIND_INDEX_KEY: Final = _derive_dev_key("pii blind index key")
DEV_BLIND_INDEX_KEY_SETTING: Final = _encode_key(DEV_BLIND_INDEX_KEY)
