# syntax=docker/dockerfile:1
#
# teleconsult: one image for every role (docker-compose.yml runs it as `teleconsult serve --no-dicom`,
# `teleconsult serve --no-http` and `teleconsult db upgrade`). Two stages: `build` installs teleconsult
# and its pinned dependencies into a virtualenv; `runtime` copies that virtualenv next to the Debian
# packages teleconsult uses at run time, and runs as an unprivileged user. docs/deployment.md.
#
# The base image is pinned to Python 3.11 (pyproject.toml: >=3.11,<3.12) on Debian 12 "bookworm",
# whose postgresql-client-15 is the pg_dump/pg_restore `teleconsult backup`/`restore` need for the
# postgres:15 service (pg_dump refuses a newer server). Pin the digest too for reproducible builds:
# docker pull python:3.11-slim-bookworm && docker inspect --format '{{index .RepoDigests 0}}' ...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Compilers, only here, for a dependency that has no wheel for the build platform (on x86_64 and
# arm64 every pinned dependency has one today; none of this reaches the runtime image).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/teleconsult
WORKDIR /src
COPY pyproject.toml README.md ./
COPY teleconsult ./teleconsult
COPY dicom_gateway ./dicom_gateway
COPY device_adapters ./device_adapters
COPY web_client ./web_client
RUN /opt/teleconsult/bin/pip install . \
    && /opt/teleconsult/bin/teleconsult --version

FROM ${PYTHON_IMAGE} AS runtime
# What teleconsult needs from Debian at run time:
# - fonts-wqy-microhei: the CJK font embedded in signed-report PDFs (TELECONSULT_REPORT_FONT default)
# - postgresql-client-15: pg_dump / pg_restore for `teleconsult backup` / `restore` on PostgreSQL
# - tzdata: local time for TZ (worklist times, DICOM dates written in local time)
# Not needed: DCMTK (test peers only), ffmpeg/libvpx/libopus (inside the av and aiortc wheels),
# libGL (opencv-python-headless), curl (health checks are Python one-liners).
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-wqy-microhei postgresql-client-15 tzdata \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 teleconsult \
    && useradd --system --uid 10001 --gid teleconsult --home-dir /var/lib/teleconsult \
        --shell /usr/sbin/nologin teleconsult \
    && install -d -o teleconsult -g teleconsult -m 0750 /var/lib/teleconsult /var/backups/teleconsult \
    && install -d -o teleconsult -g teleconsult -m 2770 /srv/ecg-inbox
# /srv/ecg-inbox: the ECG drop folder; whatever writes into it (the township file share) writes as
# group 10001, and the setgid bit keeps that group on what it creates.
COPY --from=build /opt/teleconsult /opt/teleconsult
ENV PATH=/opt/teleconsult/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TELECONSULT_DATA_DIR=/var/lib/teleconsult \
    TELECONSULT_HTTP_HOST=0.0.0.0 \
    TELECONSULT_DICOM_HOST=0.0.0.0 \
    TELECONSULT_LOG_FORMAT=json
# No .env in here (.dockerignore): settings come from the container's environment.
WORKDIR /var/lib/teleconsult
USER teleconsult:teleconsult
# HTTP, DICOM, DICOM TLS (when TELECONSULT_DICOM_TLS_PORT is set)
EXPOSE 8000 11112 2762
CMD ["teleconsult", "serve"]
