# One image for the api, worker and housekeeping services of docker-compose.yml.
# The dependencies come from requirements.lock (the lock `make run` and `make test` install, with
# hashes): the project's own dependencies only, at the lock's versions, in a layer built before the
# source is copied, so a change of the code rebuilds only the last layers.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    UV_NO_CACHE=1
ARG UV_VERSION=0.13.8

RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --disable-pip-version-check uv==${UV_VERSION} \
    && useradd --create-home --uid 10001 app
WORKDIR /app

# Dependencies first: this layer changes only with the lock or pyproject.toml.
COPY pyproject.toml requirements.lock ./
RUN uv pip install --python /opt/venv/bin/python --require-hashes -r pyproject.toml -c requirements.lock

# Then the project itself, without dependencies (all installed above).
COPY README.md manage.py ./
COPY config config
COPY core core
COPY accounts accounts
COPY agents agents
COPY executions executions
COPY conversations conversations
COPY files files
COPY webhooks webhooks
COPY workers workers
COPY schedules schedules
COPY ops ops
COPY api api
RUN uv pip install --python /opt/venv/bin/python --no-deps . \
    && python -m compileall -q /opt/venv/lib/python3.11/site-packages

USER app
EXPOSE 8000
CMD ["uvicorn", "config.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
