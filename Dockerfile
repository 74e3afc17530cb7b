# The lineguard image: the `lineguard` command, running `lineguard worker` by default.
#   docker build -t lineguard:0.1.0 .
# docker-compose.yml builds it and runs two workers and the simulator from it.
# Built on one pinned slim Python; the virtualenv is built in a first stage so that no
# compiler or pip cache reaches the final image.
FROM python:3.11.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY risk/ risk/
COPY streams/ streams/
COPY agents/ agents/
# The rocksdb extra (rocksdict) by default, so that LINEGUARD_STORE=rocksdb:// works: without
# it a worker so configured dies at start-up. EXTRAS="" builds an image for memory:// only.
ARG EXTRAS="rocksdb"
RUN python -m venv /opt/lineguard \
    && /opt/lineguard/bin/pip install ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.11.11-slim-bookworm

# The data directory exists in the image, owned by the user, so that a named volume mounted
# there (docker-compose.yml) starts with that owner rather than root.
RUN useradd --system --uid 10001 --user-group --no-log-init \
        --home-dir /var/lib/lineguard --create-home lineguard \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/lineguard/data
COPY --from=build /opt/lineguard /opt/lineguard
# Listen on every interface inside the container, so that Prometheus and the other workers
# reach the web server; Faust's data, and a rocksdb:// store's state, live in
# LINEGUARD_DATADIR (a volume in docker-compose.yml).
ENV PATH=/opt/lineguard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LINEGUARD_WEB_HOST=0.0.0.0 \
    LINEGUARD_WEB_PORT=6066 \
    LINEGUARD_DATADIR=/var/lib/lineguard/data
USER 10001:10001
WORKDIR /var/lib/lineguard
EXPOSE 6066

# Liveness from /healthz, with the standard library: the slim image has no curl. The web
# server listens on LINEGUARD_WEB_HOST, which may be the container's hostname.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; host = os.environ['LINEGUARD_WEB_HOST']; host = {'0.0.0.0': '127.0.0.1', '::': '::1'}.get(host, host); host = f'[{host}]' if ':' in host else host; urllib.request.urlopen(f'http://{host}:' + os.environ['LINEGUARD_WEB_PORT'] + '/healthz', timeout=4)"]

ENTRYPOINT ["lineguard"]
CMD ["worker", "-l", "info"]
