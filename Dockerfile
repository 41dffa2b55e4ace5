# One image for every fedmq role: `fedmq coordinator`, `fedmq worker`, `fedmq watch`, `fedmq status`.
# CPU-only TensorFlow (x86_64), a non-root user, and the `fedmq` command as the entry point.
# The base is an argument so a test can build on a stand-in (.ci/images) without shadowing the
# official image's name on the engine.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TENSORFLOW=tensorflow-cpu==2.21.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONPATH=/plugins

WORKDIR /app

# Dependencies first, in their own layer (rebuilt only when pyproject.toml changes).
COPY pyproject.toml ./
COPY deploy/image_requirements.py deploy/
RUN python deploy/image_requirements.py "$TENSORFLOW" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY fedmq ./fedmq
COPY common ./common
COPY coordinator ./coordinator
COPY worker ./worker
COPY helper ./helper
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 --user-group fedmq \
    && mkdir -p /var/lib/fedmq /plugins \
    && chown fedmq:fedmq /var/lib/fedmq

# /var/lib/fedmq: the coordinator's results and state (a volume in docker-compose.yml).
# /plugins: mount your own model package here (it is on PYTHONPATH).
USER fedmq
WORKDIR /var/lib/fedmq
EXPOSE 9100
ENTRYPOINT ["fedmq"]
CMD ["--help"]
