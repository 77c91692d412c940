# One image for both roles: `modelroute operator` (the chart's Deployment) and
# `modelroute proxy` (the injected sidecar).  Two stages so compilers and pip's
# caches never reach the final image.

FROM python:3.11-slim AS build
# Build tools only here: some wheels (uvloop, orjson) may need to compile on
# architectures without a prebuilt wheel.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/modelroute
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/
COPY proxy/ proxy/
COPY operator/ operator/
# A regular (non-editable) install: the package-dir mapping puts proxy/src and
# operator/src under modelroute.proxy / modelroute.operator inside the venv
# (tests/packaging builds from exactly these COPY lines).
RUN /opt/modelroute/bin/pip install --upgrade pip \
 && /opt/modelroute/bin/pip install . \
 && /opt/modelroute/bin/modelroute --help >/dev/null

FROM python:3.11-slim
LABEL org.opencontainers.image.title="modelroute" \
      org.opencontainers.image.description="LLM routing sidecar and its Kubernetes operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/modelroute /opt/modelroute
ENV PATH="/opt/modelroute/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric non-root user (65532, as the chart and the injected sidecar set
# runAsUser) so runAsNonRoot can be verified by the kubelet.
USER 65532:65532
WORKDIR /tmp
EXPOSE 15400 15401 9443 8080
ENTRYPOINT ["modelroute"]
CMD ["proxy", "--help"]
