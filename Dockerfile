# keystile's container image: docs/deployment.md, "Container image".
#
#   docker build -t keystile .
#   docker run -p 8080:8080 -v keystile-data:/data keystile
#
# Two stages: the first builds the wheel, the second installs only that wheel
# (with the pins of constraints.txt) into a virtual environment. The final
# image has no compiler and no build tool: every dependency comes as a wheel.

FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY src ./src
RUN python -m pip install --constraint constraints.txt build && python -m build --wheel --outdir /dist

FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/keystile/bin:$PATH
# A fixed uid and gid, so that a volume's owner can be set from the host.
RUN groupadd --system --gid 10001 keystile \
    && useradd --system --uid 10001 --gid keystile --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin keystile
COPY --from=build /dist/ /tmp/wheels/
COPY constraints.txt /tmp/constraints.txt
# The one install step; tests/e2e/test_packaging.py runs this very line.
RUN python -m venv /opt/keystile && /opt/keystile/bin/pip install --constraint /tmp/constraints.txt /tmp/wheels/keystile-*.whl && rm -rf /tmp/wheels /tmp/constraints.txt
# The embedded default: SQLite and the generated secret.key live in /data.
RUN mkdir /data && chown keystile:keystile /data && chmod 0700 /data
ENV KEYSTILE_DATA_DIR=/data KEYSTILE_HOST=0.0.0.0 KEYSTILE_PORT=8080
VOLUME /data
WORKDIR /data
USER 10001:10001
EXPOSE 8080
# Liveness only (the process answers); /readyz also checks the database and Redis.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["keystile"]
CMD ["serve"]
