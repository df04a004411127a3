# The emulator as a container image:
#   docker build -t amplitude-usermap-emulator .
#   docker run --rm -p 8000:8000 amplitude-usermap-emulator
# Configuration is by environment variables (AMPLITUDE_EMULATOR_<NAME>, see the README), e.g.
#   docker run --rm -p 8000:8000 -e AMPLITUDE_EMULATOR_RATE_LIMIT=off amplitude-usermap-emulator
# tests/docker/test_dockerfile.py checks this file and runs its CMD and HEALTHCHECK without Docker;
# keep the two in step.

# Build stage: a wheel from the source tree. The package is pure Python: no compiler is needed.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY emulator ./emulator
# The published OpenAPI document; the wheel carries it inside the package (pyproject.toml).
COPY openapi/openapi.yaml ./openapi/
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# Final stage: the wheel and its dependencies (all published as wheels), no build tools.
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="amplitude-usermap-emulator" \
      org.opencontainers.image.description="A local emulator of Amplitude's User Mapping (aliasing) API" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /dist/ /tmp/dist/
# A non-root user (uid 10001) that owns /data, the directory of the database file.
RUN python -m pip install --no-cache-dir --root-user-action=ignore /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && groupadd --system --gid 10001 emulator \
    && useradd --system --uid 10001 --gid emulator --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin emulator \
    && mkdir /data \
    && chown emulator:emulator /data

# Listen on every interface of the container; keep the state in a SQLite file on the volume
# (set AMPLITUDE_EMULATOR_DATABASE_URL=sqlite:// for an in-memory database instead).
ENV AMPLITUDE_EMULATOR_HOST=0.0.0.0 \
    AMPLITUDE_EMULATOR_PORT=8000 \
    AMPLITUDE_EMULATOR_DATABASE_URL=sqlite:////data/emulator.db
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000

# Ready once storage and any seed state are loaded. Standard library only; it reads the port (and
# the admin token, which the control API then requires) from the environment.
HEALTHCHECK --interval=3s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; t = os.environ.get('AMPLITUDE_EMULATOR_ADMIN_TOKEN'); r.urlopen(r.Request('http://127.0.0.1:%s/_emulator/ready' % (os.environ.get('AMPLITUDE_EMULATOR_PORT') or '8000'), headers={'Authorization': 'Bearer ' + t} if t else {}), timeout=2)"]

CMD ["amplitude-emulator", "serve"]
