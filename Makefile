# Two commands for a fresh machine with Python 3.11: `make run` (the default pipeline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test test-fast test-torch lint ui clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -c constraints.txt -e '.[dev]'
	@# pip byte-compiles on one core (80 s here); compileall on every core (py312_intrinsics is 3.12-only syntax)
	$(PY) -m compileall -q -j 0 -x 'torch/testing/_internal/py312_intrinsics' $(VENV)/lib >/dev/null
	touch $(STAMP)

run: $(STAMP)
	@if [ -f dvc.yaml ]; then PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/dvc repro; \
	else echo "the pipeline is not built yet (dvc.yaml is missing)"; fi

test: $(STAMP)
	$(VENV)/bin/ruff check src tests pipelines benchmarks
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

# The suite under another torch release, in its own venv (a CUDA build from PyPI, several GB; it runs on the CPU):
# the floor pyproject.toml declares, or a GPU machine's, e.g. `make test-torch TORCH=2.11.0 ARGS=tests/test_gpu_path.py`
TORCH ?= 2.7.0
ARGS ?=
test-torch:
	test -x .venv-torch$(TORCH)/bin/python || $(PYTHON) -m venv .venv-torch$(TORCH)
	.venv-torch$(TORCH)/bin/python -m pip install -q torch==$(TORCH) -e '.[dev]'
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PATH=$(abspath .venv-torch$(TORCH))/bin:$$PATH \
		.venv-torch$(TORCH)/bin/python -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests pipelines benchmarks

ui: $(STAMP)
	$(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///mlflow.db

clean:
	rm -rf $(VENV)
