"""A real, local OpenID provider for tests: discovery and JWKS over HTTP, keys made with
`cryptography`, rotation on demand, and tokens signed the way a bank's IdP signs them."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tenure_cli.procs import free_port


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    @classmethod
    def new(cls, alg: str = "RS256") -> SigningKey:
        private: Any = (ec.generate_private_key(ec.SECP256R1()) if alg == "ES256"
                        else rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return cls(kid=f"{alg.lower()}-{uuid.uuid4().hex[:8]}", alg=alg, private=private)

    def jwk(self) -> dict[str, Any]:
        algorithm = ECAlgorithm if self.alg == "ES256" else RSAAlgorithm
        public = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "alg": self.alg, "use": "sig"}


@dataclass
class IdentityProvider:
    """Serves /.well-known/openid-configuration and /jwks on 127.0.0.1; counts key fetches."""

    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.new("RS256"),
                                                            SigningKey.new("ES256")])
    port: int = field(default_factory=free_port)
    jwks_requests: int = 0
    clients: dict[str, str] = field(default_factory=lambda: {"tenure-engagement": "s3cret"})
    token_requests: int = 0
    server: asyncio.Server | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/realms/bank"

    async def __aenter__(self) -> IdentityProvider:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def rotate(self, alg: str = "RS256") -> SigningKey:
        """Publish a new key and retire the oldest one, as an IdP does."""
        new = SigningKey.new(alg)
        self.keys = [new, *self.keys[:-1]]
        return new

    def token(self, key: SigningKey | None = None, *, ttl: int = 300, **claims: Any) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        body = {"iss": self.issuer, "aud": "tenure", "sub": "u-anna", "iat": now,
                "exp": now + ttl, "scope": "profile:read", **claims}
        return jwt.encode(body, key.private, algorithm=key.alg, headers={"kid": key.kid})

    def _client_credentials(self, authorization: str, form: str) -> tuple[bytes, dict[str, Any]]:
        """The client-credentials grant: a service token whose subject is the client."""
        self.token_requests += 1
        scheme, _, encoded = authorization.partition(" ")
        client, _, secret = base64.b64decode(encoded or "").decode().partition(":")
        fields = dict(urllib.parse.parse_qsl(form))
        if scheme != "Basic" or self.clients.get(client) != secret or (
                fields.get("grant_type") != "client_credentials"):
            return b"401 Unauthorized", {"error": "invalid_client"}
        token = self.token(sub=client, client_id=client, scope=fields.get("scope", ""))
        return b"200 OK", {"access_token": token, "token_type": "Bearer", "expires_in": 300}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in head.decode().split("\r\n")[1:]) if k}
        form = (await reader.readexactly(int(headers.get("content-length", "0")))).decode()
        if path == "/realms/bank/.well-known/openid-configuration":
            status, body = b"200 OK", {"issuer": self.issuer,
                                       "jwks_uri": f"{self.issuer}/protocol/certs",
                                       "token_endpoint": f"{self.issuer}/protocol/token"}
        elif path == "/realms/bank/protocol/token":
            status, body = self._client_credentials(headers.get("authorization", ""), form)
        elif path == "/realms/bank/protocol/certs":
            self.jwks_requests += 1
            status, body = b"200 OK", {"keys": [k.jwk() for k in self.keys]}
        else:
            status, body = b"404 Not Found", {}
        raw = json.dumps(body).encode()
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(raw)).encode() + b"\r\nConnection: close"
                     b"\r\n\r\n" + raw)
        await writer.drain()
        writer.close()
