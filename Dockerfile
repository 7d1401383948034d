# SQL Sentinel container image.
#
#   docker build -t sqlsentinel:local .
#   docker build --build-arg EXTRAS=postgresql,bigquery -t sqlsentinel:bq .
#
# Two stages on the same base: the builder installs the project and its locked
# dependencies into /opt/venv; the runtime stage copies that venv and nothing
# else (no compiler, no pip, no apt lists). The file works with Docker's classic
# builder as well as BuildKit: no RUN --mount, no heredocs, no syntax directive.
# docs/deployment/docker-guide.md explains every argument below.

ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

# Database drivers to install: any of postgresql, mysql, duckdb, bigquery,
# snowflake, all (comma separated; empty for SQLite only).
ARG EXTRAS=postgresql,mysql
# Extra tools for development images only (compose/docker-compose.dev.yaml sets
# watchfiles); they must be pinned in requirements/lock.txt too.
ARG DEV_PACKAGES=

# PIP_CONSTRAINT (not `-c`) so the lock also pins the build backend that pip
# installs in its isolated build environment.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONSTRAINT=/src/requirements/lock.txt

# tini is taken from Debian here and copied, statically linked, into the runtime
# stage, which then needs no package manager run of its own; binutils strips the
# debug symbols some wheels ship in their C extensions.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       tini binutils \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /src

# Dependencies first, in their own layer, so a source change does not reinstall
# them: install the project from a skeleton (metadata and version only). Then
# strip debug symbols from the C extensions that still carry a symbol table;
# auditwheel-repaired files (already stripped, RPATH patched) are left alone,
# as strip can corrupt patchelf'd objects.
COPY requirements/lock.txt requirements/lock.txt
COPY pyproject.toml README.md ./
COPY sqlsentinel/__init__.py sqlsentinel/__init__.py
RUN /opt/venv/bin/pip install ".[${EXTRAS}]" ${DEV_PACKAGES} \
    && find /opt/venv -name '*.so' -not -path '*.libs/*' -exec sh -c \
       'for f; do if readelf -S "$f" | grep -q " \.symtab"; then strip --strip-unneeded "$f"; fi; done' \
       sh {} +

# Then the real source, without touching the dependencies again. pip compiles
# every module to bytecode, which matters with a read-only root file system.
# The last checks prove the stripped extensions still load and the CLI starts.
COPY docker/check-compiled.py /tmp/check-compiled.py
COPY sqlsentinel/ sqlsentinel/
RUN /opt/venv/bin/pip install --no-deps --force-reinstall . \
    && /opt/venv/bin/pip uninstall -y pip setuptools \
    && rm -f /opt/venv/bin/sentinel-ops \
    && /opt/venv/bin/python /tmp/check-compiled.py \
    && /opt/venv/bin/sqlsentinel --version

# ---------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown

LABEL org.opencontainers.image.title="SQL Sentinel" \
      org.opencontainers.image.description="SQL alerting daemon: alerts are SQL queries in YAML run on schedules." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it and volume
# ownership is predictable across rebuilds.
RUN groupadd --system --gid 10001 sqlsentinel \
    && useradd --system --uid 10001 --gid sqlsentinel --no-create-home \
       --home-dir /var/lib/sqlsentinel --shell /usr/sbin/nologin sqlsentinel \
    && mkdir -p /etc/sqlsentinel /var/lib/sqlsentinel \
    && chown sqlsentinel:sqlsentinel /var/lib/sqlsentinel

COPY --from=builder /usr/bin/tini-static /usr/bin/tini
COPY --from=builder /opt/venv /opt/venv
COPY docker/entrypoint.sh /usr/local/bin/sqlsentinel-entrypoint

# Every setting of the daemon has a SQLSENTINEL_ variable; these are the image's
# defaults. SQLSENTINEL_REVISION feeds the revision label of sqlsentinel_build_info.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SQLSENTINEL_CONFIG=/etc/sqlsentinel/alerts.yaml \
    SQLSENTINEL_STATE_DB=sqlite:////var/lib/sqlsentinel/state.db \
    SQLSENTINEL_HTTP_HOST=0.0.0.0 \
    SQLSENTINEL_HTTP_PORT=8080 \
    SQLSENTINEL_LOG_FORMAT=json \
    SQLSENTINEL_LOG_LEVEL=info \
    SQLSENTINEL_REVISION=${REVISION}

USER 10001:10001
WORKDIR /var/lib/sqlsentinel
VOLUME ["/var/lib/sqlsentinel"]
EXPOSE 8080

# tini is PID 1: it reaps zombies and passes SIGTERM on to the daemon, which
# drains and exits 0. Exec form, and the entrypoint script ends in `exec`, so no
# shell stays between tini and the daemon. The script is run by sh explicitly so
# a checkout that lost its executable bit still builds a working image.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/bin/sh", "/usr/local/bin/sqlsentinel-entrypoint"]
CMD ["daemon"]

# `sqlsentinel healthcheck` asks /health/ready on the port in SQLSENTINEL_HTTP_PORT.
# No --start-interval: Engines before 25 reject it at build time, so a short
# interval gives the fast first "healthy" instead; compose files may lengthen it.
HEALTHCHECK --interval=2s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/opt/venv/bin/sqlsentinel", "healthcheck", "--timeout", "2"]
