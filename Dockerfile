# syntax=docker/dockerfile:1
# mailbridge as a container: `mailbridge run` as an unprivileged user, state under a volume.
#
#   docker build -t mailbridge .
#   docker run -d --name mailbridge \
#     -v "$PWD/mailbridge.toml:/srv/mailbridge/config/mailbridge.toml:ro" \
#     -v mailbridge-var:/srv/mailbridge/var \
#     -e MAILBRIDGE_MAIL_PASSWORD \
#     mailbridge
#   docker exec mailbridge mailbridge tickets list
#
# The web app (case tracker, attachment downloads) runs from the same image as a second
# container with the command `web` and [web] listen = "0.0.0.0:8080" (README: "The web app beside
# the service", a compose file with both).
#
# The configuration is read from $MAILBRIDGE_CONFIG; relative paths in it (var_dir = "var")
# are relative to /srv/mailbridge. `mailbridge run` migrates the database schema on start.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the mailbridge wheel (with alembic/ and templates/ inside, as mailbridge/_alembic
#     and mailbridge/_templates) and wheels of every dependency
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mailbridge ./mailbridge
COPY alembic ./alembic
COPY templates ./templates
RUN pip wheel --wheel-dir /wheels .

# --- runtime
FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MAILBRIDGE_CONFIG=/srv/mailbridge/config/mailbridge.toml

RUN groupadd --system --gid 10001 mailbridge \
 && useradd --system --uid 10001 --gid mailbridge --home-dir /srv/mailbridge --no-create-home \
      --shell /usr/sbin/nologin mailbridge

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels mailbridge

WORKDIR /srv/mailbridge
COPY config/mailbridge.example.toml config/mailbridge.example.toml
# var/ holds the SQLite database (unless database.url points elsewhere), raw mails and
# attachments: it must outlive the container.
RUN mkdir -p var && chown mailbridge:mailbridge var
VOLUME ["/srv/mailbridge/var"]

USER mailbridge:mailbridge
# mailbridge is PID 1 and handles SIGTERM itself: it finishes the mail it is on, then exits.
STOPSIGNAL SIGTERM
# `mailbridge web` ([web] listen = "0.0.0.0:8080" in a container).
EXPOSE 8080
ENTRYPOINT ["mailbridge"]
CMD ["run"]
