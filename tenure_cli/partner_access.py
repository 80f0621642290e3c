"""Partner principals at the broker: SCRAM credentials and ACLs through Kafka's Admin API.

aiokafka's admin client has no call for SCRAM credentials (KIP-554) and builds one ACL per
request, so this module speaks the two missing Admin API requests itself with aiokafka's own
protocol types (AlterUserScramCredentials v0 and DescribeUserScramCredentials v0, both
"flexible" versions) and uses aiokafka's CreateAcls/DescribeAcls/DeleteAcls requests. The
broker's StandardAuthorizer enforces what is written here; the services enforce nothing.

The salted password is computed here (RFC 5802 Hi = PBKDF2-HMAC-SHA-512), so the clear
password never travels to the broker, only to the partner.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

SCRAM_SHA_512 = 2  # ScramMechanism id on the wire
RESOURCE_NOT_FOUND = 91  # error code (aiokafka has no class for it)
SCRAM_ITERATIONS = 8192  # Kafka accepts 4096..16384 for SHA-512

# ACL enums of the Kafka protocol (org.apache.kafka.common.acl / resource).
RESOURCE_ANY, RESOURCE_TOPIC = 1, 2
PATTERN_ANY, PATTERN_MATCH, PATTERN_LITERAL, PATTERN_PREFIXED = 1, 2, 3, 4
OP_ANY, OP_WRITE = 1, 4
PERMISSION_ANY, PERMISSION_ALLOW = 1, 3
OPERATIONS = {1: "ANY", 2: "ALL", 3: "READ", 4: "WRITE", 5: "CREATE", 6: "DELETE", 7: "ALTER",
              8: "DESCRIBE", 9: "CLUSTER_ACTION", 10: "DESCRIBE_CONFIGS", 11: "ALTER_CONFIGS",
              12: "IDEMPOTENT_WRITE"}
PATTERNS = {3: "LITERAL", 4: "PREFIXED"}
RESOURCES = {2: "TOPIC", 3: "GROUP", 4: "CLUSTER", 5: "TRANSACTIONAL_ID"}
PERMISSIONS = {2: "DENY", 3: "ALLOW"}


class BrokerRefused(RuntimeError):
    """The broker answered an admin request with an error; the message says which."""


# ------------------------------------------------------------------ SCRAM wire structs


class _AlterScramResponse(Response):
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", CompactArray(
            ("user", CompactString("utf-8")),
            ("error_code", Int16),
            ("error_message", CompactString("utf-8")),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )


class _AlterScramStruct(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _AlterScramResponse
    SCHEMA = Schema(
        ("deletions", CompactArray(
            ("name", CompactString("utf-8")),
            ("mechanism", Int8),
            ("tags", TaggedFields),
        )),
        ("upsertions", CompactArray(
            ("name", CompactString("utf-8")),
            ("mechanism", Int8),
            ("iterations", Int32),
            ("salt", CompactBytes),
            ("salted_password", CompactBytes),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )


class _AlterScram(Request[_AlterScramStruct]):
    API_KEY = 51

    def __init__(self, deletions: list[Any], upsertions: list[Any]):
        self.deletions = deletions
        self.upsertions = upsertions

    def build(self, request_struct_class: type[_AlterScramStruct]) -> _AlterScramStruct:
        return request_struct_class(self.deletions, self.upsertions, {})


class _DescribeScramResponse(Response):
    API_KEY = 50
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", CompactString("utf-8")),
        ("results", CompactArray(
            ("user", CompactString("utf-8")),
            ("error_code", Int16),
            ("error_message", CompactString("utf-8")),
            ("credential_infos", CompactArray(
                ("mechanism", Int8),
                ("iterations", Int32),
                ("tags", TaggedFields),
            )),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )


class _DescribeScramStruct(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 50
    API_VERSION = 0
    RESPONSE_TYPE = _DescribeScramResponse
    SCHEMA = Schema(
        ("users", CompactArray(("name", CompactString("utf-8")), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class _DescribeScram(Request[_DescribeScramStruct]):
    API_KEY = 50

    def __init__(self, users: list[str] | None):
        self.users = users

    def build(self, request_struct_class: type[_DescribeScramStruct]) -> _DescribeScramStruct:
        users = None if self.users is None else [(u, {}) for u in self.users]
        return request_struct_class(users, {})


# ------------------------------------------------------------------ the admin


@dataclass(frozen=True)
class Acl:
    principal: str
    resource_type: str
    resource_name: str
    pattern: str
    operation: str
    permission: str

    def __str__(self) -> str:
        return (f"{self.permission} {self.principal} {self.operation} on {self.resource_type} "
                f"{self.pattern.lower()} {self.resource_name!r}")


def salted_password(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> bytes:
    """RFC 5802's Hi(): what the broker stores instead of the password.

    >>> salted_password("pw", b"salt", 4096).hex()[:16]
    'e010097e86661ec7'
    """
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)


def new_password() -> str:
    """A fresh random secret for a partner (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class BrokerAccess:
    """SCRAM credentials and ACLs of principals, over the platform's (super-user) listener."""

    def __init__(self, bootstrap: str):
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)

    async def __aenter__(self) -> BrokerAccess:
        await self.admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.admin.close()

    async def _send(self, request: Request[Any]) -> Any:
        # Admin requests may go to any broker; KRaft forwards them to the controller.
        return await self.admin._send_request(request)  # noqa: SLF001 - no public call exists

    async def set_scram_password(self, user: str, password: str) -> None:
        """Create or replace the user's SCRAM-SHA-512 credential (a new salt every time)."""
        salt = secrets.token_bytes(32)
        upsert = (user, SCRAM_SHA_512, SCRAM_ITERATIONS, salt,
                  salted_password(password, salt), {})
        response = await self._send(_AlterScram([], [upsert]))
        _raise_for(response.results)

    async def delete_scram(self, user: str) -> bool:
        """Delete the user's credential; False if there was none."""
        response = await self._send(_AlterScram([(user, SCRAM_SHA_512, {})], []))
        for _, code, message, _tags in response.results:
            if code == 0:
                return True
            if code == RESOURCE_NOT_FOUND:
                return False
            raise BrokerRefused(f"{for_code(code).__name__}: {message}")
        return False

    async def scram_users(self) -> set[str]:
        """Every user holding a SCRAM credential on the cluster."""
        response = await self._send(_DescribeScram(None))
        if response.error_code:
            raise BrokerRefused(
                f"{for_code(response.error_code).__name__}: {response.error_message}"
            )
        return {user for user, code, _msg, infos, _tags in response.results if code == 0}

    async def allow_prefixed_write(self, principal: str, topic_prefix: str) -> None:
        """ALLOW principal WRITE on every topic whose name starts with the prefix (WRITE implies
        DESCRIBE, which the producer needs for metadata; nothing else is granted)."""
        response = await self._send(
            CreateAclsRequest(RESOURCE_TOPIC, topic_prefix, PATTERN_PREFIXED, principal, "*",
                              OP_WRITE, PERMISSION_ALLOW)
        )
        for code, message in response.creation_responses:
            if code:
                raise BrokerRefused(f"{for_code(code).__name__}: {message}")

    async def acls_of(self, principal: str) -> list[Acl]:
        response = await self._send(
            DescribeAclsRequest(RESOURCE_ANY, None, PATTERN_ANY, principal, None, OP_ANY,
                                PERMISSION_ANY)
        )
        if response.error_code:
            raise BrokerRefused(
                f"{for_code(response.error_code).__name__}: {response.error_message}"
            )
        found = []
        for resource_type, name, pattern, acls in response.resources:
            for who, _host, operation, permission in acls:
                found.append(Acl(who, RESOURCES.get(resource_type, str(resource_type)), name,
                                 PATTERNS.get(pattern, str(pattern)),
                                 OPERATIONS.get(operation, str(operation)),
                                 PERMISSIONS.get(permission, str(permission))))
        return found

    async def delete_acls_of(self, principal: str) -> int:
        """Delete every ACL naming the principal; the broker stops honouring them at once."""
        response = await self._send(
            DeleteAclsRequest(RESOURCE_ANY, None, PATTERN_ANY, principal, None, OP_ANY,
                              PERMISSION_ANY)
        )
        deleted = 0
        for code, message, matching in response.filter_responses:
            if code:
                raise BrokerRefused(f"{for_code(code).__name__}: {message}")
            deleted += len(matching)
        return deleted


def _raise_for(results: list[Any]) -> None:
    for user, code, message, _tags in results:
        if code:
            raise BrokerRefused(f"{user}: {for_code(code).__name__}: {message}")
