# Two commands on a fresh machine: `make demo` and `make test` (each creates .venv if missing).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
UV_VERSION := 0.13.9

export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__COSMOS__ENABLE_TELEMETRY := False
export SCARF_ANALYTICS := false
export DO_NOT_TRACK := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := False

.PHONY: install demo airflow test test-fast lint lock clean warehouse-down chromium

install: $(STAMP)

# The lock (requirements.lock) pins every package; uv installs it in seconds, pip is the fallback.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)" || true
	($(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements.lock \
	  && $(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .) \
	|| ($(BIN)/python -m pip install -q -r requirements.lock && $(BIN)/python -m pip install -q --no-deps -e .)
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: $(STAMP)
	$(BIN)/lifecycle demo

# The Airflow UI on the demo's runs (http://127.0.0.1:8080; the login is printed); Ctrl-C stops it.
airflow: $(STAMP)
	$(BIN)/lifecycle airflow

# Two pytest-xdist workers, each with its own embedded PostgreSQL (tests/conftest.py);
# TEST_WORKERS=0 runs the suite in one process. The 25 slowest tests are listed at the end,
# so a CI log shows where the suite's time goes.
TEST_WORKERS ?= 2
TEST_ARGS := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup) --durations=25

test: $(STAMP) chromium
	$(BIN)/python -m pytest $(TEST_ARGS)

# The report test opens the HTML report in headless Chromium (Debian's package); installed
# when missing if we may (root and apt-get), else that one test skips with the reason.
chromium:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get install -y -q chromium >/dev/null; } \
	|| echo "chromium is not installed: the report rendering test will be skipped"

test-fast: $(STAMP)
	$(BIN)/python -m pytest $(TEST_ARGS) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check include dags plugins tests bench scripts

# Re-pin after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

warehouse-down: $(STAMP)
	$(BIN)/lifecycle warehouse down

clean: warehouse-down
	rm -rf .lifecycle dbt_project/target dbt_project/logs
