"""The platform's service identities: a private CA and one short-lived certificate per process.

    python -m services.launcher.certs DIR [--days 30]

writes, for every server and worker of the topology, Envoy and the launcher:

    DIR/ca/ca.crt, DIR/ca/ca.key        the platform CA (its key stays here)
    DIR/<name>/ca.crt, tls.crt, tls.key one process's identity

the layout of a cert-manager Certificate's Secret, so a directory can become a
Kubernetes Secret as it is (`kubectl create secret generic <name>-tls
--from-file=DIR/<name>`) and docker-compose.yml mounts the same layout. Keys are
ECDSA P-256 and written mode 0600. An existing CA that outlives the new
certificates is kept, so issuing again rotates every process's certificate
without touching what the others trust; otherwise a new CA is made. Each
certificate names its process (a DNS SAN, what Envoy and the kit's client
check), `localhost` and 127.0.0.1, and serves as client and server alike.
`./shop up` issues a fresh set into its run directory on every start.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services import topology
from services.kit.config import ServiceTls
from services.launcher import procs
from services.topology import Kind

# The identities beyond the topology's servers and workers: the edge, and the
# launcher's own (its readiness checks, admin verbs and the tests' direct calls).
EDGE = "envoy"
LAUNCHER = "launcher"
DEFAULT_DAYS = 30
# What `./shop up` issues into its run directory on every start.
UP_DAYS = 7
# The CA outlives its certificates: issuing again within this many of their
# lifetimes keeps it.
CA_LIFETIMES = 4
CA_DIR = "ca"


def names() -> list[str]:
    """Every identity the platform needs: its servers and workers, Envoy, the launcher."""
    return [p.name for p in topology.of_kind(Kind.SERVER, Kind.WORKER)] + [EDGE, LAUNCHER]


def files(directory: Path, name: str) -> ServiceTls:
    """Where one identity's files are under `directory`."""
    own = directory / name
    return ServiceTls(ca=own / "ca.crt", cert=own / "tls.crt", key=own / "tls.key")


def missing(directory: Path) -> list[Path]:
    """The files of `names()` that `directory` lacks."""
    wanted = [files(directory, name) for name in names()]
    return [path for own in wanted for path in (own.ca, own.cert, own.key) if not path.is_file()]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _builder(subject: str, key: ec.EllipticCurvePrivateKey, days: int) -> x509.CertificateBuilder:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


_KEY_USAGES = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
)  # fmt: skip


def _new_ca(days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder("shop platform CA", key, days)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop platform CA")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                **{**dict.fromkeys(_KEY_USAGES, False), "key_cert_sign": True, "crl_sign": True}
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _usable_ca(
    directory: Path, days: int
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The CA under `directory` if it outlives certificates issued now for `days`."""
    cert_path, key_path = directory / CA_DIR / "ca.crt", directory / CA_DIR / "ca.key"
    if not (cert_path.is_file() and key_path.is_file()):
        return None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if cert.not_valid_after_utc < _now() + datetime.timedelta(days=days + 1):
        return None
    return cert, key


def _leaf(
    name: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, days: int
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName(name),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        _builder(name, key, days)
        .issuer_name(ca.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write(path: Path, data: bytes, mode: int) -> None:
    procs.private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)
    tmp.replace(path)


def issue(
    directory: Path, identities: Iterable[str] | None = None, days: int = DEFAULT_DAYS
) -> None:
    """Certificates valid for `days` for every identity (all of `names()` by default),
    signed by the CA under `directory`, made anew unless it outlives them."""
    if days < 1:
        raise ValueError("certificates must be valid for at least a day")
    procs.private_dir(directory)
    found = _usable_ca(directory, days)
    if found is None:
        ca, ca_key = _new_ca(days * CA_LIFETIMES)
        _write(directory / CA_DIR / "ca.key", _key_pem(ca_key), 0o600)
        _write(directory / CA_DIR / "ca.crt", _pem(ca), 0o644)
    else:
        ca, ca_key = found
    for name in names() if identities is None else identities:
        cert, key = _leaf(name, ca, ca_key, days)
        own = files(directory, name)
        _write(own.key, _key_pem(key), 0o600)
        _write(own.cert, _pem(cert), 0o644)
        _write(own.ca, _pem(ca), 0o644)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.launcher.certs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", type=Path, help="where the CA and the certificates go")
    parser.add_argument(
        "--days", type=int, default=DEFAULT_DAYS, help=f"validity ({DEFAULT_DAYS} days)"
    )
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")
    issue(args.directory, days=args.days)
    print(f"issued {len(names())} certificates under {args.directory} for {args.days} days")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
