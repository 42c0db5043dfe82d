#!/bin/bash
# First start of the compose PostgreSQL: one database for Airflow's metadata, one for the warehouse.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" <<SQL
create user airflow with password 'airflow';
create database airflow owner airflow;
create user lifecycle with password '${LIFECYCLE_DB_PASSWORD}';
create database lifecycle owner lifecycle;
SQL
