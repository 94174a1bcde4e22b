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
# the suite runs in two pytest-xdist workers (one torch thread each, tests/conftest.py), a test
# file per worker at a time (its module fixtures built once); XDIST= runs it in one process
XDIST ?= -n 2 --dist loadfile
# CPU kernel limits the suite must also pass under (a submission made on an AVX-512 machine must
# not depend on its kernels): oneDNN capped at AVX2 and at SSE4.1, ATen's own kernels at the
# baseline. `make test` runs the kernel-sensitive tests under each; `make test-isa` all of them.
ISA_LIMITS ?= ONEDNN_MAX_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default
ISA_TESTS  ?= tests/test_parity.py tests/test_fuse.py tests/test_cpu.py tests/test_onnx.py \
              tests/test_fuzz_inputs.py

.PHONY: run test test-all test-isa bench docs install install-dev clean

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
	@for lim in $(ISA_LIMITS); do \
	  echo "== $$lim: $(ISA_TESTS)"; \
	  env $$lim $(PY) -m pytest -q $(XDIST) $(ISA_TESTS) $(PYTEST_ARGS) || exit 1; \
	done
	$(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS)

# the whole default suite under each kernel limit (about 4 x the time of `make test`'s last step)
test-isa: $(VENV)/.installed-dev
	@for lim in $(ISA_LIMITS); do \
	  echo "== $$lim"; env $$lim $(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS) || exit 1; \
	done

test-all: $(VENV)/.installed-dev
	$(PY) -m pytest -q $(XDIST) -m "slow or not slow" $(PYTEST_ARGS)

# the user guide as a site (build/site); the suite builds it with --strict too (tests/test_docs.py)
docs: $(VENV)/.installed-dev
	$(VENV)/bin/mkdocs build --strict

bench: $(VENV)/.installed-dev
	$(PY) benchmarks/bench_eager.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
