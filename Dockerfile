# The project baked into the official Airflow image (used by docker-compose.yaml).
# The build context is the checkout less .dockerignore (no .venv, .lifecycle, .git, .env, caches):
# the image builds its own dbt manifest below.
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
# Mount points of docker-compose.yaml's named volumes, owned by the airflow user: a new volume
# takes the ownership of the directory it is mounted on (else root's, and tasks cannot write).
RUN mkdir -p /opt/lifecycle/reports /opt/airflow/auth /opt/airflow/logs \
    && chown -R airflow:0 /opt/lifecycle /opt/airflow/auth /opt/airflow/logs
USER airflow

WORKDIR /opt/lifecycle
COPY --chown=airflow:0 requirements.lock pyproject.toml README.md ./
# The same pins as a developer's .venv (requirements.lock), Airflow included.
RUN pip install --no-cache-dir -r requirements.lock
COPY --chown=airflow:0 . .
RUN pip install --no-cache-dir --no-deps -e .
# The parsed dbt project the daily DAG renders its tasks from (else `dbt ls` at every parse).
RUN lifecycle dbt-manifest

ENV LIFECYCLE_PROJECT_DIR=/opt/lifecycle \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/lifecycle/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/lifecycle/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__COSMOS__ENABLE_TELEMETRY=False \
    AIRFLOW__COSMOS__ENABLE_CACHE_DBT_LS=False \
    SCARF_ANALYTICS=false \
    DO_NOT_TRACK=1 \
    DBT_SEND_ANONYMOUS_USAGE_STATS=False
