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
	@# pillow-simd takes over Pillow's import name: the torchvision baseline of `bench loaders` then measures
	@# the fastest PIL there is, and prep's rare re-encodes use it too.
	$(PIP) uninstall -y pillow
	CC="cc -mavx2" $(PIP) install --force-reinstall --no-deps pillow-simd==12.1.1.post0
	touch $@

demo: $(STAMP)
	rm -rf $(DEMO)
	$(PY) -m prep.sample --out $(DEMO)/ILSVRC2012
	$(PY) -m prep.imagenet --src $(DEMO)/ILSVRC2012 --out $(DEMO)/shards
	$(PY) -m prep.verify $(DEMO)/shards
	$(PY) -m trainer --data-path $(DEMO)/shards --output-dir $(DEMO)/run --device cpu --loader cpu \
		--model resnet18 --crop-size 32 --val-size 36 --batch-size 50 --epochs 6 --lr 0.05 --warmup-epochs 1 \
		--lr-schedule cosine --print-freq 10 --skip_steps 2

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf build .pytest_cache
