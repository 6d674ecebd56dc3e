# shapley-svc: multi-stage build on a slim Python base.
# CI substitutes a locally built base with --build-arg BASE=...; behind a TLS-intercepting proxy
# pass --build-arg PIP_CERT=<path of a CA bundle mounted into the build>.
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_CERT=${PIP_CERT}
RUN python3 -m venv /opt/shapley-svc
COPY pyproject.toml README.md /src/
COPY shapley_svc /src/shapley_svc
RUN /opt/shapley-svc/bin/pip install /src

FROM ${BASE}
# numba runs the parallel kernels on OpenMP, from the system's libgomp, which slim Debian images
# lack: numba then falls back to its workqueue layer, on which calls take turns on the kernels
# (shapley_svc.kernels.threading_layer) instead of running side by side.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 shapley \
    && mkdir -p /var/cache/numba && chown shapley /var/cache/numba
COPY --from=build /opt/shapley-svc /opt/shapley-svc
ENV PATH=/opt/shapley-svc/bin:$PATH \
    NUMBA_CACHE_DIR=/var/cache/numba \
    PYTHONUNBUFFERED=1 \
    SHAPLEY_SVC_ADDRESS=0.0.0.0:50051 \
    SHAPLEY_SVC_METRICS_ADDRESS=0.0.0.0:9464 \
    SHAPLEY_SVC_HEALTH_ADDRESS=0.0.0.0:50052
USER shapley
# Compile every kernel the server uses into the image's numba cache (the same warm-up the server
# runs before reporting SERVING), so a new container is SERVING within seconds.
RUN python3 -c "from shapley_svc.server import Settings, start_server, warm_up; \
s = start_server(Settings(address='127.0.0.1:0', metrics_address='')); warm_up(s); s.stop(0)"
EXPOSE 50051 50052 9464
# `health` checks the server's plaintext health port (SHAPLEY_SVC_HEALTH_ADDRESS, its 0.0.0.0 as
# 127.0.0.1; else SHAPLEY_SVC_ADDRESS), so a container run with other ports, or with TLS, stays
# healthy, and a busy one answers.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["shapley-svc", "health"]
CMD ["shapley-svc", "serve"]
