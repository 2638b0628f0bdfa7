# pyqd server image. Build: docker build -t pyqd .   Run with PostgreSQL: see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PYQD_HOST=0.0.0.0 \
    PYQD_PORT=8000 \
    PYQD_DATA_DIR=/var/lib/pyqd

WORKDIR /opt/pyqd
COPY pyproject.toml README.md ./
COPY server ./server
COPY repository ./repository
COPY datastore ./datastore
COPY tables ./tables
COPY models ./models
COPY engines ./engines
COPY oml ./oml
RUN pip install . \
    && useradd --system --home-dir /var/lib/pyqd --create-home pyqd \
    && useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pyqd-worker

# The server runs as root inside the container only so that it can start user code as the
# unprivileged `pyqd-worker` account (workers must not read the data directory or the signing key);
# see docs/security.md.
VOLUME ["/var/lib/pyqd"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
CMD ["pyqd", "serve"]
