# TrakSense ingest: one image for every app process (listener, worker, beat, flower, migrations).
# The command picks the process; see docker-compose.yml and CONTRACT.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so a code change does not reinstall them: the runtime lock alone (the whole
# tree pinned, every file hash-checked), never the dev tools. Every locked package ships a
# manylinux wheel (psycopg[binary] included), so no compiler or apt package is needed.
# tests/integration/test_runtime_install.py runs this same pip command into an empty virtualenv.
COPY requirements.lock .
RUN pip install --require-hashes -r requirements.lock

# A fixed, unprivileged uid; /var/lib/traksense is beat's schedule file (a volume in compose).
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home traksense \
    && install -d -o traksense -g traksense /var/lib/traksense

COPY ingest_tasks/ ingest_tasks/
COPY listener/ listener/
COPY migrations/ migrations/

USER traksense

# 9100: listener metrics, 9101: worker metrics, 5555: Flower.
EXPOSE 9100 9101 5555

CMD ["python", "-m", "listener"]
