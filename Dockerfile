# syntax=docker/dockerfile:1.7
# The fargate-runtime base image: the runtime and its pinned dependencies, no application.
# Build FROM it and give your app as CMD (MODULE:ATTR); examples/*/Dockerfile are children to copy:
#
#   ARG BASE_IMAGE=REGISTRY/fargate-runtime:GIT_SHA
#   FROM ${BASE_IMAGE}
#   USER root                      (build steps as root; the code stays root-owned, read-only)
#   COPY requirements.txt /app/requirements.txt
#   RUN pip install --no-cache-dir -r /app/requirements.txt     (PIP_CONSTRAINT keeps the
#                                                                runtime's pins: a conflict fails)
#   COPY app/ /app/app/
#   RUN python -m compileall -q --invalidation-mode checked-hash /app /opt/venv
#   USER 10001:10001
#   CMD ["app.main:app"]
#
# Without a CMD the container prints one line asking for MODULE:ATTR and exits 78.
#
# Multi-arch (Graviton is ~20% cheaper, and Fargate Spot runs both):
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/fargate-runtime:GIT_SHA --push .
# The python image tag is a manifest list, so the same line builds both architectures.

# One base for both stages: the venv's interpreter symlinks must resolve in the runtime stage.
# Pin by version tag; for reproducible builds, append the manifest-list digest, e.g.
#   python:3.11.14-slim-bookworm@sha256:<digest from `docker buildx imagetools inspect`>
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# No pip cache or version check in a throwaway stage; bytecode is compiled once, below.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# The venv lives at the same path in both stages so its scripts' shebangs stay valid.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml pinned by constraints.txt: this layer survives
# code changes.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install --no-compile -c constraints.txt -r requirements.txt
# Then the package itself, not editable, without re-resolving dependencies.
COPY README.md ./
COPY fargate_runtime ./fargate_runtime
RUN pip install --no-compile --no-deps .
# The versions this image holds, the runtime's own included, as constraints for child builds:
# a child's `pip install` may add packages but never move these (a conflict fails the build).
RUN mkdir -p /opt/fargate-runtime \
 && pip list --format=freeze --exclude pip --exclude setuptools > /opt/fargate-runtime/constraints.txt
# Compile now: a read-only root filesystem takes no .pyc at run time. Hash-based .pyc files
# stay valid whatever mtimes COPY gives the sources.
RUN python -m compileall -q -j 0 --invalidation-mode checked-hash /opt/venv

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="fargate-runtime" \
      org.opencontainers.image.description="Python asyncio runtime for ECS on Fargate" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid/gid (10001) that exists in no base image: task definitions say "user": "10001:10001".
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app
# The official image ships its standard library without .pyc files; compile it once here so a
# read-only container does not recompile it in memory at every start.
RUN python -m compileall -q -j 0 "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/fargate-runtime/constraints.txt /opt/fargate-runtime/constraints.txt
# PYTHONDONTWRITEBYTECODE: never try to write .pyc at run time (read-only root filesystem).
# PYTHONUNBUFFERED: each JSON log line reaches the log driver at once, even at SIGKILL.
# HOME and TMPDIR: /tmp is the only writable path (task definitions mount a volume there).
# FARGATE_RUNTIME_HEALTH_PORT: the runtime serves /healthz there (on 127.0.0.1, where the
# container HEALTHCHECK runs); HEALTHCHECK probes it.
# PIP_CONSTRAINT: every `pip install` of a child image is held to the versions above.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    FARGATE_RUNTIME_HEALTH_PORT=8081 \
    PIP_CONSTRAINT=/opt/fargate-runtime/constraints.txt
# Child images put their code here (fargate-runtime run puts the working directory first on
# sys.path).
WORKDIR /app
# Numeric, so ECS and Kubernetes can tell it is not root without reading /etc/passwd.
USER 10001:10001
# ECS sends STOPSIGNAL to PID 1 at stop; the supervisor drains on SIGTERM.
STOPSIGNAL SIGTERM
# For `docker run` and local compose; ECS ignores it and runs the task definition's healthCheck
# (same command). No curl in slim images: the runtime's own client probes /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["fargate-runtime", "healthcheck"]
# Exec form: the supervisor is PID 1 and receives SIGTERM itself (a shell-form CMD makes
# /bin/sh PID 1, and sh does not forward it). No CMD: the application is the child image's.
ENTRYPOINT ["fargate-runtime", "run"]
