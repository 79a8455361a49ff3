"""Service identity on the network: mutual TLS between the platform's own processes.

A service trusts the identity metadata a call carries (`x-user-id`,
`x-tenant-id`, `x-user-role`: services.kit.identity) only from callers that
prove they are platform workloads. With `SERVICE_TLS_CA`, `SERVICE_TLS_CERT`
and `SERVICE_TLS_KEY` set (PEM files, `services.kit.config.ServiceTls`), a
process serves its gRPC port over TLS and refuses, in the handshake, every
client without a certificate that CA issued; and it dials the other services
(services.kit.grpc_client) with its own certificate, checking theirs against
the same CA and the name it dials. Envoy is such a client, and so are the
launcher's readiness checks and the tests holding its client certificate.

None of the three set: plaintext, for a process started bare (integration
tests). Some but not all: a configuration error at start-up, never a quiet
downgrade. The files are read once when the port is bound or the channel made;
a rotated certificate takes effect when the process restarts
(docs/OPERATIONS.md, "Service identity").
"""

from __future__ import annotations

from pathlib import Path

import grpc

from services.kit.config import TLS_SETTINGS, ConfigError, ServiceTls


def _read(tls: ServiceTls) -> tuple[bytes, bytes, bytes]:
    """The CA, certificate and key, or a ConfigError naming the setting that is wrong."""
    found: list[bytes] = []
    for setting, path in zip(TLS_SETTINGS, (tls.ca, tls.cert, tls.key), strict=True):
        try:
            found.append(Path(path).read_bytes())
        except OSError as exc:
            raise ConfigError(f"{setting}: cannot read {str(path)!r}: {exc.strerror}") from exc
    return found[0], found[1], found[2]


def server_credentials(tls: ServiceTls) -> grpc.ServerCredentials:
    """A port that asks for a client certificate and refuses a call without a valid one."""
    ca, cert, key = _read(tls)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(tls: ServiceTls) -> grpc.ChannelCredentials:
    """Dial with this process's certificate, trusting only servers the CA issued."""
    ca, cert, key = _read(tls)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
