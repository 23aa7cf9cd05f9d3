# One image for every Python service of the upscaling stack.
# Entry points: tiler, dispatcher, monitor, gateway, migrate, local-openeo (see docker/entrypoint.sh).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
RUN python3 -m venv /opt/venv
COPY pyproject.toml /src/
COPY upscaling /src/upscaling
COPY services /src/services
COPY gateway /src/gateway
COPY local_openeo /src/local_openeo
RUN /opt/venv/bin/pip install --no-cache-dir /src

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --home-dir /app app
COPY --from=build /opt/venv /opt/venv
COPY docker/entrypoint.sh /usr/local/bin/upscaling
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 10001
WORKDIR /app
ENTRYPOINT ["upscaling"]
CMD ["gateway"]
