# Two entry points: `make serve` runs a server on an example root, `make test`
# runs the whole test suite.  Both set up the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 6969
ROOT ?= example-root
BIN = $(VENV)/bin

.PHONY: venv serve test clean

$(BIN)/twistd: setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

venv: $(BIN)/twistd

$(ROOT)/hello.txt:
	mkdir -p $(ROOT)
	echo "Hello from txfbtftp" > $@

serve: venv $(ROOT)/hello.txt
	$(BIN)/twistd -n --pidfile= tftp --backend fs:$(ROOT) --port $(PORT) --interface 127.0.0.1

test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
