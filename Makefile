# Two entry points for a fresh machine: `make demo` and `make test`.
# Both build (or reuse) the virtual environment in $(VENV) first.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip --disable-pip-version-check -q
STAMP   := $(VENV)/.installed
DEMO    ?= build/demo

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -e '.[dev]'
	touch $@

demo: $(STAMP)
	rm -rf $(DEMO)
	$(PY) -m prep.sample --out $(DEMO)/ILSVRC2012
	$(PY) -m prep.imagenet --src $(DEMO)/ILSVRC2012 --out $(DEMO)/shards
	$(PY) -m prep.verify $(DEMO)/shards

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf build .pytest_cache
