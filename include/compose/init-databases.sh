#!/bin/bash
# First start of the compose PostgreSQL (an empty data volume): one database for Airflow's
# metadata, one for the warehouse, each with its own owner. The passwords come from the
# environment (docker-compose.yaml requires them); psql quotes them (:'var'), so any character
# is safe here. Changing them later takes ALTER USER: this script runs only on a fresh volume.
set -euo pipefail
: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set}"
: "${LIFECYCLE_DB_PASSWORD:?LIFECYCLE_DB_PASSWORD is not set}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
  -v airflow_password="$AIRFLOW_DB_PASSWORD" -v lifecycle_password="$LIFECYCLE_DB_PASSWORD" <<'SQL'
create user airflow with password :'airflow_password';
create database airflow owner airflow;
create user lifecycle with password :'lifecycle_password';
create database lifecycle owner lifecycle;
SQL
