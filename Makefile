# The two commands: `make run` and `make test`. Both create .venv/ and install the project first,
# from requirements.lock (every version, transitive ones included, with hashes): with uv when it can
# be installed from PyPI, else with pip. Regenerate the lock after changing a pyproject.toml:
#   .venv/bin/uv pip compile pyproject.toml clients/python/pyproject.toml --extra local --extra dev \
#       --generate-hashes --universal --python-version 3.11 -o requirements.lock
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
LOCK := requirements.lock

.PHONY: run test install bench clean-data drill-production

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if $(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) >$(VENV)/uv-install.log 2>&1; then \
		$(VENV)/bin/uv pip install --quiet --python $(PY) --require-hashes -r $(LOCK) && \
		$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e . -e ./clients/python; \
	else \
		echo "uv==$(UV_VERSION) could not be installed (see $(VENV)/uv-install.log): installing with pip" && \
		$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r $(LOCK) && \
		$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e . -e ./clients/python; \
	fi
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) manage.py run_platform

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

# The compose topology on network namespaces, with its workload and faults (root, iproute2, pgbouncer).
drill-production: $(VENV)/.installed
	$(PY) -m pytest tests/test_production_drill.py -m production $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) bench/run_bench.py

# Stops the embedded servers and deletes their data (.data/).
clean-data:
	-$(PY) manage.py local_services stop
	rm -rf .data
