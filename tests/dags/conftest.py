"""Airflow reads its configuration at import: set it before any test here imports airflow."""

from __future__ import annotations

import os
import tempfile

from lifecycle.airflow_env import airflow_env

_home = tempfile.mkdtemp(prefix="lifecycle-airflow-")
# The DAG file is parsed only: no task runs here, so the warehouse URL is never dialled.
for key, value in airflow_env("postgresql://parse:only@127.0.0.1:1/parse").items():
    os.environ[key] = value
os.environ["AIRFLOW_HOME"] = _home
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_home}/airflow.db"
