# One image for every Python service of the upscaling stack (see docker/entrypoint.sh):
#   tiler | dispatcher | monitor | gateway | migrate | local-openeo | health (probe for health checks)
# BASE_IMAGE: any Debian-like image with python3 >= 3.11 and its venv module (default: the official slim image).
ARG BASE_IMAGE=python:3.11-slim

# --- build: a virtualenv with the project and its pinned dependencies (wheels only, no compiler needed) ---
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
COPY pyproject.toml /src/
# Dependencies first (their layer survives source changes), read from pyproject.toml.
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && /opt/venv/bin/pip install --only-binary=:all: -r /tmp/requirements.txt
COPY upscaling /src/upscaling
COPY services /src/services
COPY gateway /src/gateway
COPY local_openeo /src/local_openeo
RUN /opt/venv/bin/pip install --no-deps /src \
 && /opt/venv/bin/pip uninstall -y pip setuptools

# --- final: the base image, the virtualenv and the entry point; runs as an unprivileged user ---
FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /app/udps
COPY --from=build /opt/venv /opt/venv
COPY docker/entrypoint.sh /usr/local/bin/upscaling
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UPSCALING_SHARED_DIR=/app/shared \
    LOCAL_OPENEO_UDP_DIR=/app/udps
USER 10001:10001
WORKDIR /app
# gateway HTTP/WebSocket + metrics, gateway gRPC, tiler gRPC, dispatcher/monitor health, local openEO, metrics
EXPOSE 8000 50051 50052 50053 50054 8081 9101 9102 9103
ENTRYPOINT ["upscaling"]
CMD ["gateway"]
