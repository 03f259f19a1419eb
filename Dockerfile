# The engine's image. `docker compose up` runs it against Mosquitto and Redis containers
# (docker-compose.yml); on its own, without EBD_MQTT__URL and EBD_REDIS__URL, it starts the
# embedded default: its own mosquitto and redis-server, data in $EBD_STATE_DIR (mount a volume
# at /var/lib/ebd to keep it).
#
#   docker build -t ebdispatch .
#   docker run -p 127.0.0.1:8080:8080 -v ebd-state:/var/lib/ebd \
#     -v "$PWD/ebd.toml:/etc/ebd/ebd.toml:ro" ebdispatch ebd serve --config /etc/ebd/ebd.toml
#
# Configuration is a mounted TOML file passed with --config, EBD_ variables, or both (the
# variables win). The default command has no --config, because `ebd serve --config FILE` stops
# with "cannot read config file" when FILE is missing: the image has to start from EBD_
# variables alone (EBD_OFFICES='[...]' as JSON).
FROM python:3.11-slim-bookworm

# mosquitto and redis-server for the embedded default: the same Debian packages as the
# Makefile's SYSTEM_PACKAGES (a unit test keeps the two lists equal).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        mosquitto \
        redis-server \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The package and its runtime dependencies only (no dev extras), installed non-editable.
# README.md is the package's readme, which the build reads.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dispatcher/ dispatcher/
COPY adapters/ adapters/
COPY drills/ drills/
COPY receiver/ receiver/
RUN pip install --no-cache-dir . \
    && rm -rf /src

# Region files and the shipped configs. Installed non-editable, the package cannot find the
# project folder, so a relative `regions.file` (config/regions/fujian.csv) is found from the
# working directory.
WORKDIR /app
COPY config/ config/

RUN groupadd --system --gid 10001 ebd \
    && useradd --system --uid 10001 --gid ebd --home-dir /var/lib/ebd --no-create-home \
        --shell /usr/sbin/nologin ebd \
    && mkdir -p /var/lib/ebd /etc/ebd \
    && chown ebd:ebd /var/lib/ebd

ENV EBD_API__LISTEN=0.0.0.0:8080 \
    EBD_STATE_DIR=/var/lib/ebd

USER ebd
EXPOSE 8080

# The slim image has no curl. The port is taken from EBD_API__LISTEN, so overriding it there
# does not break the check. Generous start period: the embedded default starts two servers first.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('EBD_API__LISTEN', ':8080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

CMD ["ebd", "serve"]
