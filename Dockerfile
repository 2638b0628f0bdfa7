# The pyqd image: the API server (`pyqd serve`, the default) and, with another command, a Dask scheduler
# (`dask scheduler`) or a Dask worker (`dask worker tcp://scheduler:8786 --nthreads N`) that hosts pyqd's sandboxed
# worker pool. Build: docker build -t pyqd .   Run a cluster: docker-compose.yml and docs/operations.md.
# Alone, on SQLite: docker run --init -p 8000:8000 -v pyqd:/var/lib/pyqd -e PYQD_SIGNING_KEY=... pyqd
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYQD_HOST=0.0.0.0 \
    PYQD_PORT=8000 \
    PYQD_DATA_DIR=/var/lib/pyqd

WORKDIR /opt/pyqd

# The dependencies first, in a layer of their own (a change to pyqd's code does not reinstall them), then the
# accounts: `pyqd` owns the data directory; `pyqd-worker` is who user code runs as, in API servers and Dask workers.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && useradd --system --home-dir /var/lib/pyqd --create-home pyqd \
    && useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pyqd-worker

COPY server ./server
COPY repository ./repository
COPY datastore ./datastore
COPY tables ./tables
COPY models ./models
COPY engines ./engines
COPY oml ./oml
# Fail the build, not the first start, if the server or the Dask engine cannot be imported.
RUN pip install --no-deps . \
    && python -c "import distributed, server.app, server.cli, engines.runner"

# Processes run as root inside the container only so that they can start user code as the unprivileged
# `pyqd-worker` account (user code must not read the data directory or the signing key); see docs/security.md.
# Dask schedulers and workers hold no secret at all.
VOLUME ["/var/lib/pyqd"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["pyqd", "serve"]
