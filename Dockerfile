# One image for every Python service of the upscaling stack (see docker/entrypoint.sh):
#   tiler | dispatcher | monitor | gateway | migrate | accounts | local-openeo | health (probe for health checks)
# BASE_IMAGE: any Debian-like image with python3 >= 3.11 and its venv module (default: the official slim Python).
ARG BASE_IMAGE=python:3.11-slim

# --- deps: a virtualenv with the pinned dependencies of pyproject.toml (wheels only, no compiler needed) ---
FROM ${BASE_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml /src/
RUN python3 -m venv /opt/venv \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && /opt/venv/bin/pip install --only-binary=:all: -r /tmp/requirements.txt

# --- web: the map page's front-end libraries from npm (gateway/web/package-lock.json), served by the gateway ---
FROM ${BASE_IMAGE} AS web
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null \
 && rm -rf /var/lib/apt/lists/*
COPY gateway/web/package.json gateway/web/package-lock.json /web/
RUN cd /web && npm ci --omit=dev --no-audit --no-fund

# --- build: the project itself into that virtualenv (sources change more often than dependencies) ---
FROM deps AS build
COPY . /src
COPY --from=web /web/node_modules /src/gateway/web/node_modules
RUN /opt/venv/bin/pip install --no-deps /src \
 && /opt/venv/bin/pip uninstall -y pip setuptools

# --- final: the base image, the virtualenv and the entry point; runs as an unprivileged user ---
FROM ${BASE_IMAGE}
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app
COPY docker/entrypoint.sh /usr/local/bin/upscaling
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /app
# gateway HTTP/WebSocket + metrics, gateway gRPC, tiler gRPC, dispatcher/monitor health, local openEO, metrics
EXPOSE 8000 50051 50052 50053 50054 8081 9101 9102 9103
ENTRYPOINT ["upscaling"]
CMD ["gateway"]
