# One image for every Python process of the platform (services, stubs, migrations);
# docker-compose.yml overrides the command per service. Build: docker build -t shop-app .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Runtime dependencies only, in their own layer (rebuilt when the lock changes): every
# package at the version and hash requirements.lock names (compiled from pyproject.toml's
# pins), nothing resolved at build time. Extras (local, dev) stay out. xds-protos
# overwrites OpenTelemetry's protos with old ones: the pinned ones go back last.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock \
    && sed -n '/^opentelemetry-proto==/,/^ *# via/p' requirements.lock >/tmp/otel-proto.txt \
    && pip install --require-hashes --no-deps --force-reinstall -r /tmp/otel-proto.txt \
    && rm /tmp/otel-proto.txt

# The code: services/, the fake upstreams in stubs/ (with their seed data) and the
# generated code plus descriptor set in gen/.
COPY services/ services/
COPY stubs/ stubs/
COPY gen/ gen/
# Bytecode compiled as root at build time: the non-root user cannot write here.
# /keys is where the `keys` service writes the token-signing key, /certs where the
# `certs` service writes the service certificates: a named volume mounted there
# starts with this directory's owner, so the non-root user can write.
RUN python -m compileall -q services stubs gen \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin shop \
    && install -d -o shop -m 0700 /keys /certs

ENV PYTHONPATH=/app:/app/gen
USER shop
EXPOSE 7051

# The gRPC health service of the process on HEALTH_PORT, a plaintext port: with service
# TLS on, the health-only port (<PREFIX>_HEALTH_BIND), since the gRPC port then takes
# platform certificates only. HEALTH_SERVICE names one service, empty the server.
# docker-compose.yml gives every service its own check, Kubernetes its own probes.
ENV HEALTH_PORT=7051 \
    HEALTH_SERVICE=""
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; r = g.HealthStub(grpc.insecure_channel('127.0.0.1:' + os.environ['HEALTH_PORT'])).Check(h.HealthCheckRequest(service=os.environ['HEALTH_SERVICE']), timeout=3); sys.exit(r.status != h.HealthCheckResponse.SERVING)"]

CMD ["python", "-m", "services.order"]
