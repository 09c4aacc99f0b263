# The two commands: `make run` and `make test`. Both create .venv/ and install the project first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test install bench clean-data

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[local,dev]' -e ./clients/python
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) manage.py run_platform

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) bench/run_bench.py

# Stops the embedded servers and deletes their data (.data/).
clean-data:
	-$(PY) manage.py local_services stop
	rm -rf .data
