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
RUN useradd --create-home --uid 10001 shapley \
    && mkdir -p /var/cache/numba && chown shapley /var/cache/numba
COPY --from=build /opt/shapley-svc /opt/shapley-svc
ENV PATH=/opt/shapley-svc/bin:$PATH \
    NUMBA_CACHE_DIR=/var/cache/numba \
    PYTHONUNBUFFERED=1
USER shapley
# Compile the numba kernels into the image's cache so a new container starts warm.
RUN python3 -c "import shapley_svc.reference"
CMD ["shapley-svc", "demo"]
