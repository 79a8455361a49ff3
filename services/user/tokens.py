"""Access tokens: Ed25519 signing keys, their JWKS, and issuing EdDSA JWTs.

Keys are identified by their RFC 7638 JWK thumbprint, so a key's `kid` is the
same wherever it is computed and never needs to be configured.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.kit.encoding import b64url


def public_jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    """The RFC 8037 members of a key's public JWK: kty, crv, x."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}


def thumbprint(jwk: dict[str, str]) -> str:
    """The RFC 7638 thumbprint: SHA-256 of the required members, sorted, no whitespace."""
    required = {name: jwk[name] for name in ("crv", "kty", "x")}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"


class KeyRing:
    """The service's Ed25519 keys: the first signs, every one is published."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        self.keys = tuple(keys)
        self._jwks = json.dumps(
            {
                "keys": [
                    {**public_jwk(k.private_key), "kid": k.kid, "alg": "EdDSA", "use": "sig"}
                    for k in self.keys
                ]
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def load(cls, paths: Sequence[str | Path]) -> KeyRing:
        """Read PEM (PKCS8) Ed25519 private keys, in signing order."""
        keys: list[SigningKey] = []
        for path in paths:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path} is not an Ed25519 private key")
            keys.append(SigningKey(thumbprint(public_jwk(key)), key))
        return cls(keys)

    @property
    def signing(self) -> SigningKey:
        return self.keys[0]

    def jwks(self) -> bytes:
        """The JWKS document (RFC 7517) of every key's public half."""
        return self._jwks


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int

    def __repr__(self) -> str:
        return f"IssuedToken(expires_in={self.expires_in})"


class TokenIssuer:
    """Signs access tokens for the edge to verify against the published JWKS."""

    def __init__(self, keyring: KeyRing, issuer: str, audience: str, ttl_s: int) -> None:
        self.keyring = keyring
        self._issuer = issuer
        self._audience = audience
        self._ttl_s = ttl_s

    def issue(self, user_id: str, tenant: str, role: str, now: float | None = None) -> IssuedToken:
        """A signed JWT for the user, valid from `now` (Unix seconds) for the configured TTL."""
        issued_at = int(time.time() if now is None else now)
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "tenant": tenant,
            "role": role,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + self._ttl_s,
            "jti": secrets.token_urlsafe(16),
        }
        key = self.keyring.signing
        token = jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
        return IssuedToken(token, self._ttl_s)


def generate_key(path: str | Path) -> str:
    """Write a new Ed25519 private key as PKCS8 PEM, readable by the owner only; its kid."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never overwrite a key that may still be signing or published.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        # A strict umask could leave the owner unable to read it; make it exactly 0600.
        os.fchmod(out.fileno(), 0o600)
        out.write(pem)
    return thumbprint(public_jwk(key))
