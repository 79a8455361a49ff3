"""Signing keys, their JWKS and access tokens, checked with pyjwt as the edge would."""

from __future__ import annotations

import base64
import json
import stat
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.user.tokens import KeyRing, TokenIssuer, generate_key, public_jwk, thumbprint

# RFC 8037, appendix A.1 and A.3: an Ed25519 key and its RFC 7638 thumbprint.
RFC_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC_KID = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
# An hour ago: iat must not lie in the future, and the 60 s token has expired.
NOW = int(time.time()) - 3600


def _write_rfc_key(path: Path) -> None:
    key = Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(RFC_D + "="))
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _verify(jwks: bytes, token: str, *, verify_exp: bool = True) -> dict[str, object]:
    """Verify like the edge: pick the JWKS key named by the token's kid."""
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_json(jwks.decode())[kid]
    claims: dict[str, object] = jwt.decode(
        token,
        key,
        algorithms=["EdDSA"],
        audience="shop-api",
        issuer="shop-platform",
        options={"verify_exp": verify_exp},
    )
    return claims


def test_the_kid_is_the_rfc_7638_thumbprint(tmp_path: Path) -> None:
    _write_rfc_key(tmp_path / "rfc.pem")
    ring = KeyRing.load([tmp_path / "rfc.pem"])
    assert ring.signing.kid == RFC_KID
    published = json.loads(ring.jwks())["keys"]
    assert published == [
        {"kty": "OKP", "crv": "Ed25519", "x": RFC_X, "kid": RFC_KID, "alg": "EdDSA", "use": "sig"}
    ]


def test_the_thumbprint_ignores_members_other_than_crv_kty_x() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": RFC_X}
    assert thumbprint({**jwk, "kid": "other", "use": "sig"}) == thumbprint(jwk) == RFC_KID


def test_a_token_verifies_against_the_jwks_and_carries_the_claims(tmp_path: Path) -> None:
    generate_key(tmp_path / "k1.pem")
    ring = KeyRing.load([tmp_path / "k1.pem"])
    issuer = TokenIssuer(ring, "shop-platform", "shop-api", 900)
    issued = issuer.issue("user-1", "tenant-a", "customer")
    assert issued.expires_in == 900
    assert issued.token not in repr(issued)
    header = jwt.get_unverified_header(issued.token)
    assert (header["alg"], header["kid"]) == ("EdDSA", ring.signing.kid)
    claims = _verify(ring.jwks(), issued.token)
    assert {k: claims[k] for k in ("iss", "aud", "sub", "tenant", "role")} == {
        "iss": "shop-platform",
        "aud": "shop-api",
        "sub": "user-1",
        "tenant": "tenant-a",
        "role": "customer",
    }
    assert claims["exp"] == int(str(claims["iat"])) + 900 == int(str(claims["nbf"])) + 900
    assert claims["jti"] != _verify(ring.jwks(), issuer.issue("user-1", "t", "c").token)["jti"]


def test_an_expired_token_is_refused(tmp_path: Path) -> None:
    generate_key(tmp_path / "k1.pem")
    ring = KeyRing.load([tmp_path / "k1.pem"])
    issued = TokenIssuer(ring, "shop-platform", "shop-api", 60).issue("u", "t", "c", now=NOW)
    with pytest.raises(jwt.ExpiredSignatureError):
        _verify(ring.jwks(), issued.token)
    claims = _verify(ring.jwks(), issued.token, verify_exp=False)
    assert (claims["iat"], claims["exp"]) == (NOW, NOW + 60)


def test_with_two_keys_the_first_signs_and_both_are_published(tmp_path: Path) -> None:
    current, upcoming = tmp_path / "current.pem", tmp_path / "next.pem"
    generate_key(current)
    generate_key(upcoming)
    ring = KeyRing.load([current, upcoming])
    rotated = KeyRing.load([upcoming, current])
    kids = [k["kid"] for k in json.loads(ring.jwks())["keys"]]
    assert kids == [ring.keys[0].kid, ring.keys[1].kid]
    assert len(set(kids)) == 2
    old = TokenIssuer(ring, "shop-platform", "shop-api", 900).issue("u", "t", "c")
    new = TokenIssuer(rotated, "shop-platform", "shop-api", 900).issue("u", "t", "c")
    assert jwt.get_unverified_header(old.token)["kid"] == kids[0]
    assert jwt.get_unverified_header(new.token)["kid"] == kids[1]
    # During the rotation, tokens of either key verify against either document.
    for document in (ring.jwks(), rotated.jwks()):
        assert _verify(document, old.token)["sub"] == _verify(document, new.token)["sub"] == "u"


def test_a_generated_key_is_owner_only_in_new_folders_and_never_overwritten(
    tmp_path: Path,
) -> None:
    path = tmp_path / "deep" / "keys" / "signing.pem"
    kid = generate_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(loaded, Ed25519PrivateKey)
    assert thumbprint(public_jwk(loaded)) == kid == KeyRing.load([path]).signing.kid
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        generate_key(path)
    assert path.read_bytes() == before


def test_a_key_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="not an Ed25519"):
        KeyRing.load([path])
