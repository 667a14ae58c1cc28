# Two entry points: `make serve` runs a server on an example root, `make test`
# runs the whole test suite.  Both set up the virtual environment first.
# `make check` runs the type checker, the linter and the docs build.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 6969
ROOT ?= example-root
BIN = $(VENV)/bin

.PHONY: venv serve test check docs clean

$(BIN)/twistd: setup.cfg setup.py txfbtftp/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,check]' --config-settings editable_mode=compat
	touch $@

venv: $(BIN)/twistd

$(ROOT)/hello.txt:
	mkdir -p $(ROOT)
	echo "Hello from txfbtftp" > $@

serve: venv $(ROOT)/hello.txt
	$(BIN)/txfbtftp serve --backend fs:$(ROOT) --port $(PORT) --interface 127.0.0.1

# The suite runs twice: on the compiled DATA hot path, then on pure Python.
test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	TXFBTFTP_PURE_PYTHON=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

check: venv
	$(BIN)/mypy
	$(BIN)/ruff check txfbtftp tests benchmarks
	$(MAKE) docs SPHINXOPTS="-W --keep-going"

docs: venv
	$(BIN)/sphinx-build -q $(SPHINXOPTS) -b html docs docs/_build/html

clean:
	rm -rf $(VENV) build *.egg-info docs/_build
