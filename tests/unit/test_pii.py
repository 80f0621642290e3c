"""Profile's personal-data protection: encryption, rotation, blind indexes, masking."""

from __future__ import annotations

import base64
from datetime import date

import pytest

from services.profile.pii import (
    DEV_BLIND_INDEX_KEY,
    DEV_BLIND_INDEX_KEY_SETTING,
    DEV_KEYRING,
    DEV_KEYRING_SETTING,
    BlindIndex,
    FieldCipher,
    Keyring,
    PIIError,
    UnknownKeyError,
    key_id_of,
    mask_date,
    mask_email,
    mask_name,
    mask_national_id,
    mask_phone,
    normalise_phone,
)

SECRET = "Ada Lovelace, QQ123456C"
CUSTOMER = "c-0001"


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


@pytest.fixture
def k1() -> bytes:
    return bytes(range(32))


@pytest.fixture
def k2() -> bytes:
    return bytes(range(100, 132))


@pytest.fixture
def cipher(k1: bytes) -> FieldCipher:
    return FieldCipher(Keyring({"k1": k1}, active="k1"))


def assert_no_plaintext(exc: BaseException, *secrets: str) -> None:
    message = str(exc) + repr(exc)
    for secret in (SECRET, CUSTOMER, *secrets):
        assert secret not in message


# ------------------------------------------------------------------ encryption


@pytest.mark.parametrize("value", [SECRET, "", "ünïcödé ✓ 日本", "x" * 10_000])
def test_round_trip(cipher: FieldCipher, value: str) -> None:
    token = cipher.encrypt(value, field="name", customer_id=CUSTOMER)
    assert cipher.decrypt(token, field="name", customer_id=CUSTOMER) == value
    assert value.encode() not in token or value == ""


def test_token_layout(cipher: FieldCipher) -> None:
    token = cipher.encrypt(SECRET, field="name", customer_id=CUSTOMER)
    assert token[0] == 1
    assert token[1] == 2 and token[2:4] == b"k1"
    # header + 12-byte nonce + ciphertext (same length as plaintext) + 16-byte tag
    assert len(token) == 4 + 12 + len(SECRET.encode()) + 16
    assert key_id_of(token) == "k1"


def test_each_encryption_uses_a_fresh_nonce(cipher: FieldCipher) -> None:
    tokens = {cipher.encrypt(SECRET, field="name", customer_id=CUSTOMER) for _ in range(50)}
    assert len(tokens) == 50
    assert len({token[4:16] for token in tokens}) == 50


def _flip(token: bytes, position: int) -> bytes:
    tampered = bytearray(token)
    tampered[position] ^= 0x01
    return bytes(tampered)


@pytest.mark.parametrize(
    "where",
    ["version", "key_id_length", "key_id", "nonce", "ciphertext", "tag"],
)
def test_tampering_is_detected(cipher: FieldCipher, where: str) -> None:
    token = cipher.encrypt(SECRET, field="name", customer_id=CUSTOMER)
    position = {
        "version": 0,
        "key_id_length": 1,
        "key_id": 3,
        "nonce": 4 + 5,
        "ciphertext": 16 + 3,
        "tag": len(token) - 1,
    }[where]
    with pytest.raises(PIIError) as caught:
        cipher.decrypt(_flip(token, position), field="name", customer_id=CUSTOMER)
    assert_no_plaintext(caught.value)


def test_every_single_bit_flip_is_detected(cipher: FieldCipher) -> None:
    token = cipher.encrypt("short", field="name", customer_id=CUSTOMER)
    for position in range(len(token)):
        for bit in range(8):
            tampered = bytearray(token)
            tampered[position] ^= 1 << bit
            with pytest.raises(PIIError):
                cipher.decrypt(bytes(tampered), field="name", customer_id=CUSTOMER)


def test_relabelled_key_id_fails_even_when_the_keyring_holds_it(k1: bytes) -> None:
    # Two ids for the same key: a token relabelled k1 -> k2 must still fail (header is AAD).
    cipher = FieldCipher(Keyring({"k1": k1, "k2": k1}, active="k1"))
    token = cipher.encrypt(SECRET, field="name", customer_id=CUSTOMER)
    relabelled = token[:2] + b"k2" + token[4:]
    with pytest.raises(PIIError, match="failed authentication"):
        cipher.decrypt(relabelled, field="name", customer_id=CUSTOMER)


@pytest.mark.parametrize(
    "token", [b"", b"\x01", b"\x01\x02k1" + b"\x00" * 27, b"\x02" + b"\x00" * 40]
)
def test_truncated_or_foreign_tokens_fail_cleanly(cipher: FieldCipher, token: bytes) -> None:
    with pytest.raises(PIIError):
        cipher.decrypt(token, field="name", customer_id=CUSTOMER)
    with pytest.raises(PIIError):
        key_id_of(token)


@pytest.mark.parametrize(
    ("field", "customer_id"),
    [("email", CUSTOMER), ("name", "c-0002"), ("nam", CUSTOMER), ("name", "c-00010")],
)
def test_token_is_bound_to_field_and_customer(
    cipher: FieldCipher, field: str, customer_id: str
) -> None:
    token = cipher.encrypt(SECRET, field="name", customer_id=CUSTOMER)
    with pytest.raises(PIIError, match="failed authentication") as caught:
        cipher.decrypt(token, field=field, customer_id=customer_id)
    assert_no_plaintext(caught.value)


def test_field_and_customer_cannot_be_shifted_into_each_other(cipher: FieldCipher) -> None:
    token = cipher.encrypt(SECRET, field="ab", customer_id="c")
    with pytest.raises(PIIError):
        cipher.decrypt(token, field="a", customer_id="bc")


def test_empty_field_or_customer_is_refused(cipher: FieldCipher) -> None:
    with pytest.raises(ValueError, match="field"):
        cipher.encrypt(SECRET, field="", customer_id=CUSTOMER)
    with pytest.raises(ValueError, match="customer_id"):
        cipher.encrypt(SECRET, field="name", customer_id="")


# ------------------------------------------------------------------ rotation


def test_rotation(k1: bytes, k2: bytes) -> None:
    old = FieldCipher(Keyring.from_setting(f"k1:{b64(k1)}"))
    token = old.encrypt(SECRET, field="national_id", customer_id=CUSTOMER)
    assert key_id_of(token) == "k1"

    rotated = FieldCipher(Keyring.from_setting(f"k2:{b64(k2)},k1:{b64(k1)}"))
    assert rotated.keyring.active_key_id == "k2"
    assert rotated.decrypt(token, field="national_id", customer_id=CUSTOMER) == SECRET
    assert rotated.needs_reencryption(token)

    moved = rotated.reencrypt(token, field="national_id", customer_id=CUSTOMER)
    assert key_id_of(moved) == "k2"
    assert not rotated.needs_reencryption(moved)
    assert rotated.reencrypt(moved, field="national_id", customer_id=CUSTOMER) == moved

    retired = FieldCipher(Keyring.from_setting(f"k2:{b64(k2)}"))
    assert retired.decrypt(moved, field="national_id", customer_id=CUSTOMER) == SECRET
    with pytest.raises(UnknownKeyError, match="'k1'") as caught:
        retired.decrypt(token, field="national_id", customer_id=CUSTOMER)
    assert caught.value.key_id == "k1"
    assert isinstance(caught.value, PIIError)
    assert_no_plaintext(caught.value)


def test_reencrypt_refuses_a_token_bound_elsewhere(k1: bytes, k2: bytes) -> None:
    token = FieldCipher(Keyring({"k1": k1}, active="k1")).encrypt(
        SECRET, field="name", customer_id=CUSTOMER
    )
    rotated = FieldCipher(Keyring({"k2": k2, "k1": k1}, active="k2"))
    with pytest.raises(PIIError):
        rotated.reencrypt(token, field="email", customer_id=CUSTOMER)


# ------------------------------------------------------------------ keyring parsing


def test_keyring_setting_round_trip_and_order(k1: bytes, k2: bytes) -> None:
    ring = Keyring.from_setting(f" k2:{b64(k2)} , k1:{b64(k1)}== ")
    assert ring.key_ids == ("k2", "k1")
    assert ring.key("k1") == k1 and ring.key("k2") == k2
    assert Keyring.from_setting(ring.to_setting()).key_ids == ring.key_ids
    assert b64(k1) not in repr(ring)


def test_generate_gives_distinct_random_keys() -> None:
    first, second = Keyring.generate(), Keyring.generate("k9")
    assert first.active_key_id == "k1" and second.active_key_id == "k9"
    assert first.key("k1") != second.key("k9")
    assert len(first.key("k1")) == 32


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("k1:{k1},", "entry 2 is empty"),
        ("{k1}", "not 'key_id:base64url_key'"),
        (":{k1}", "not 'key_id:base64url_key'"),
        ("k1:not base64!", "not valid base64url"),
        ("k1:{std}", "not valid base64url"),
        ("k1:a", "not valid base64url"),
        ("k1:c2hvcnQ", "5 bytes; 32 are required"),
        ("k1:{k1}{k1}", "64 bytes"),
        ("k1:{k1},k1:{k2}", "'k1' appears more than once"),
        ("k 1:{k1}", "key id 'k 1' must be"),
    ],
)
def test_keyring_setting_errors(setting: str, reason: str, k1: bytes, k2: bytes) -> None:
    # A key whose standard base64 has '+' or '/': the setting must be base64url.
    standard = base64.b64encode(b"\xfb" * 32).decode()
    text = setting.format(k1=b64(k1), k2=b64(k2), std=standard)
    with pytest.raises(ValueError, match=reason) as caught:
        Keyring.from_setting(text)
    assert b64(k1) not in str(caught.value) and b64(k2) not in str(caught.value)


def test_keyring_constructor_checks(k1: bytes) -> None:
    with pytest.raises(ValueError, match="at least one key"):
        Keyring({}, active="k1")
    with pytest.raises(ValueError, match="not among the keys"):
        Keyring({"k1": k1}, active="k2")
    with pytest.raises(ValueError, match="16 bytes"):
        Keyring({"k1": k1[:16]}, active="k1")
    with pytest.raises(UnknownKeyError):
        Keyring({"k1": k1}, active="k1").key("k2")


def test_dev_keys_are_deterministic_marked_and_distinct(k1: bytes) -> None:
    assert Keyring.from_setting(DEV_KEYRING_SETTING).key("dev1") == DEV_KEYRING.key("dev1")
    assert DEV_KEYRING.uses_dev_key
    assert BlindIndex.from_setting(DEV_BLIND_INDEX_KEY_SETTING).uses_dev_key
    assert DEV_KEYRING.key("dev1") != DEV_BLIND_INDEX_KEY
    assert not Keyring({"k1": k1}, active="k1").uses_dev_key
    assert not BlindIndex(k1).uses_dev_key


# ------------------------------------------------------------------ blind index


@pytest.fixture
def blind() -> BlindIndex:
    return BlindIndex(bytes(range(200, 232)), default_country_code="+44")


def test_phone_formats_share_one_index(blind: BlindIndex) -> None:
    formats = [
        "+447700900123",
        "+44 7700 900123",
        "07700-900123",
        "0044 7700 900123",
        "(07700) 900.123",
        "+44 (0)7700 900123",
        "\uff0b\uff14\uff14 7700 900123",  # full-width "+44"
    ]
    indexes = {blind.index("phone", number) for number in formats}
    assert len(indexes) == 1
    assert len(indexes.pop()) == 32


def test_different_numbers_differ(blind: BlindIndex) -> None:
    assert blind.index("phone", "07700 900123") != blind.index("phone", "07700 900124")
    assert blind.index("phone", "07700 900123") != blind.index("phone", "+337700900123")


def test_default_country_code_is_configurable() -> None:
    key = bytes(32)
    german = BlindIndex(key, default_country_code="+49")
    assert german.normalise("phone", "030 1234567") == "+49301234567"
    assert german.index("phone", "030 1234567") == german.index("phone", "+49 30 1234567")
    assert german.index("phone", "030 1234567") != BlindIndex(key).index("phone", "030 1234567")
    with pytest.raises(ValueError, match="default_country_code"):
        BlindIndex(key, default_country_code="44")


def test_national_id_and_email_normalisation(blind: BlindIndex) -> None:
    assert blind.index("national_id", "qq 12-34-56 c") == blind.index("national_id", "QQ123456C")
    assert blind.index("email", "  Ada@Example.COM ") == blind.index("email", "ada@example.com")
    assert blind.index("national_id", "QQ123456C") != blind.index("national_id", "QQ123456D")


def test_kinds_are_domain_separated(blind: BlindIndex) -> None:
    value = "07700900123"
    indexes = {
        blind.index("phone", value),
        blind.index("national_id", value),
        blind.index("email", value),
    }
    assert len(indexes) == 3


def test_index_depends_on_the_key() -> None:
    assert BlindIndex(bytes(32)).index("email", "a@b.c") != BlindIndex(b"\x01" * 32).index(
        "email", "a@b.c"
    )


def test_index_is_not_a_plain_hash(blind: BlindIndex) -> None:
    import hashlib

    index = blind.index("phone", "+447700900123")
    assert index != hashlib.sha256(b"+447700900123").digest()
    assert b"7700900123" not in index


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("phone", "call 07700 900123", "only digits"),
        ("phone", "07700+900123", "only digits"),
        ("phone", " - ", "no digits"),
        ("national_id", " - ", "empty"),
        ("email", "   ", "empty"),
    ],
)
def test_bad_values_are_rejected_without_echo(
    blind: BlindIndex, kind: str, value: str, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        blind.index(kind, value)  # type: ignore[arg-type]
    if value.strip(" -"):
        assert value not in str(caught.value) and "900123" not in str(caught.value)


def test_unknown_kind_is_rejected(blind: BlindIndex) -> None:
    with pytest.raises(ValueError, match="unknown blind index kind"):
        blind.index("name", "Ada")  # type: ignore[arg-type]


def test_blind_index_key_setting(k1: bytes) -> None:
    assert BlindIndex.from_setting(b64(k1)).index("email", "a@b.c") == BlindIndex(k1).index(
        "email", "a@b.c"
    )
    with pytest.raises(ValueError, match="16 bytes"):
        BlindIndex.from_setting(b64(k1[:16]))
    with pytest.raises(ValueError, match="empty"):
        BlindIndex.from_setting(" ")
    assert b64(k1) not in repr(BlindIndex(k1))


def test_normalise_phone_keeps_unknown_country_digits_bare() -> None:
    assert normalise_phone("447700900123") == "447700900123"


# ------------------------------------------------------------------ masking


def test_mask_examples() -> None:
    assert mask_name("Ada Lovelace") == "A** L*******"
    assert mask_phone("+447700900123") == "+44*******123"
    assert mask_email("ada@example.com") == "a**@example.com"
    assert mask_national_id("QQ123456C") == "*****456C"
    assert mask_date(date(1815, 12, 10)) == "****-**-**"
    assert mask_date(date(1815, 12, 10), keep_year=True) == "1815-**-**"


@pytest.mark.parametrize("mask", [mask_name, mask_phone, mask_email, mask_national_id, mask_date])
def test_masks_pass_none_through(mask: object) -> None:
    assert mask(None) is None  # type: ignore[operator]


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+1 415 555 0100", "+1*******100"),
        ("+353 87 123 4567", "+353******567"),
        ("07700 900123", "********123"),
        ("+4412", "+44**"),
        ("12345", "*****"),
        ("not a number", "************"),
    ],
)
def test_mask_phone_edge_cases(number: str, masked: str) -> None:
    assert mask_phone(number) == masked


def test_masks_hide_short_values_whole() -> None:
    assert mask_email("a@example.com") == "*@example.com"
    assert mask_email("nobody") == "******"
    assert mask_national_id("AB12") == "****"
    assert mask_name("") == ""


def test_masks_never_reveal_more_than_they_keep() -> None:
    assert "Lovelace" not in mask_name("Ada Lovelace")
    assert "900" not in mask_phone("+447700900123")
    assert "123456" not in mask_national_id("QQ123456C")
