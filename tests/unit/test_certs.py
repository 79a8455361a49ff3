"""The platform's certificate issuer (services/launcher/certs.py) and the launcher's TLS settings."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from services import topology
from services.kit.config import ConfigError
from services.launcher import certs
from services.launcher.config import LauncherConfig, State
from services.topology import Kind


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_every_process_envoy_and_the_launcher_get_an_identity() -> None:
    apps = {p.name for p in topology.of_kind(Kind.SERVER, Kind.WORKER)}
    assert set(certs.names()) == apps | {"envoy", "launcher"}


def test_each_certificate_names_its_process_and_is_signed_by_the_ca(tmp_path: Path) -> None:
    certs.main([str(tmp_path), "--days", "3"])
    assert certs.missing(tmp_path) == []
    ca = load(tmp_path / "ca" / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    for name in certs.names():
        own = certs.files(tmp_path, name)
        cert = load(own.cert)
        cert.verify_directly_issued_by(ca)
        assert load(own.ca) == ca
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [name, "localhost"]
        assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert 3 * 86400 <= lifetime.total_seconds() <= 3 * 86400 + 600
        assert stat.S_IMODE(own.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600


def test_issuing_again_keeps_a_ca_that_outlives_the_new_certificates(tmp_path: Path) -> None:
    certs.issue(tmp_path, ["order"], days=2)
    first_ca, first = load(tmp_path / "ca" / "ca.crt"), load(certs.files(tmp_path, "order").cert)
    certs.issue(tmp_path, ["order"], days=2)
    assert load(tmp_path / "ca" / "ca.crt") == first_ca
    assert load(certs.files(tmp_path, "order").cert).serial_number != first.serial_number
    # Certificates that would outlive the CA get a new one.
    certs.issue(tmp_path, ["order"], days=30)
    renewed = load(tmp_path / "ca" / "ca.crt")
    assert renewed != first_ca
    load(certs.files(tmp_path, "order").cert).verify_directly_issued_by(renewed)


def test_a_certificate_of_no_days_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least a day"):
        certs.issue(tmp_path, ["order"], days=0)


def test_the_launcher_turns_service_tls_on_unless_told_otherwise(tmp_path: Path) -> None:
    assert LauncherConfig.from_env({"RUN_DIR": str(tmp_path)}).service_tls is True
    off = LauncherConfig.from_env({"RUN_DIR": str(tmp_path), "SERVICE_TLS": "off"})
    assert off.service_tls is False
    given = LauncherConfig.from_env({"RUN_DIR": str(tmp_path), "SERVICE_TLS_DIR": str(tmp_path)})
    assert given.tls_dir == tmp_path.resolve()
    with pytest.raises(ConfigError, match="SERVICE_TLS must be on or off"):
        LauncherConfig.from_env({"RUN_DIR": str(tmp_path), "SERVICE_TLS": "maybe"})


def test_the_state_names_each_identity_and_none_when_plaintext(tmp_path: Path) -> None:
    assert State().client_tls is None
    state = State(tls_dir=str(tmp_path))
    assert state.client_tls == certs.files(tmp_path, "launcher")
    assert state.identity("order") == certs.files(tmp_path, "order")
