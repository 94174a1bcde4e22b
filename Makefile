# Two commands that work on a fresh machine:
#   make run   - create .venv, install, run the main job on built-in data
#   make test  - create .venv with dev extras, run the tests
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# torch / torchvision come from the machine's local wheel cache (see README)
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: run test test-all bench install install-dev clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	touch $@

$(VENV)/.installed: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-train: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e '.[train]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# the main job: train mobilenetv4_conv_small on the built-in digits data, print a summary
run: $(VENV)/.installed-train
	$(VENV)/bin/mobilenets train

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: $(VENV)/.installed-dev
	$(PY) -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	$(PY) benchmarks/bench_eager.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
