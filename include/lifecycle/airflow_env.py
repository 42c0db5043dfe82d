"""The environment an Airflow process of this project runs with (no Airflow import here)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lifecycle.settings import Settings, get_settings


def airflow_env(url: str, settings: Settings | None = None) -> dict[str, str]:
    """Environment for a local Airflow (demo, tests): SQLite metadata, no examples, no telemetry."""
    settings = settings or get_settings()
    home = Path(os.environ.get("AIRFLOW_HOME") or settings.state_dir / "airflow")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.project_dir / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.project_dir / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "AIRFLOW__COSMOS__PROPAGATE_LOGS": "False",
        # Cosmos caches `dbt ls` in Airflow Variables at parse time; parsing must not write.
        "AIRFLOW__COSMOS__ENABLE_CACHE_DBT_LS": "False",
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
        "SCARF_ANALYTICS": "false",
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        "AIRFLOW_CONN_LIFECYCLE_WAREHOUSE": url,
    }
    if settings.home is None:
        env["LIFECYCLE_HOME"] = str(settings.state_dir)
    return env


def local_home(settings: Settings | None = None) -> Path:
    """The home of the local Airflow: ``lifecycle demo`` runs its days there and ``lifecycle
    airflow`` serves its UI from the same SQLite metadata database."""
    return (settings or get_settings()).state_dir / "airflow"


def local_passwords_file(settings: Settings | None = None) -> Path:
    """The simple auth manager's passwords file of the local Airflow: outside its home, so a
    new demo (which recreates the home) keeps the login."""
    return (settings or get_settings()).state_dir / "airflow-passwords.json"


LOCAL_USER = "admin"


def local_airflow_env(url: str, settings: Settings | None = None) -> dict[str, str]:
    """``airflow_env`` for the local Airflow (demo and UI): its home, SQLite metadata, one
    admin user of the simple auth manager, DAGs paused until someone unpauses them."""
    settings = settings or get_settings()
    home = local_home(settings)
    return {
        **airflow_env(url, settings),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "LIFECYCLE_WAREHOUSE_URL": url,
        # A DAG the scheduler meets for the first time waits to be unpaused: lifecycle_daily
        # would otherwise catch up from LIFECYCLE_DAILY_START_DATE on the wall clock.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{LOCAL_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(local_passwords_file(settings)),
    }


def metadata_template(settings: Settings | None = None) -> Path:
    """Where a freshly migrated SQLite metadata database of the installed Airflow is kept, so
    that a new local Airflow home (each demo, each DAG test) copies it instead of running
    ``airflow db migrate`` again (~8 s of CPU). Named for the versions of Airflow and its
    providers: another install migrates anew."""
    from importlib.metadata import distributions

    versions = sorted(
        f"{d.metadata['Name']}=={d.version}" for d in distributions()
        if (d.metadata["Name"] or "").lower().startswith("apache-airflow")
    )
    key = hashlib.sha256("\n".join(versions).encode()).hexdigest()[:16]
    return (settings or get_settings()).state_dir / "airflow-template" / f"airflow-{key}.db"
