# Two commands on a fresh machine; each creates the environment (.venv) on first use.
#   make train [ARGS="--backend paddle --epochs 2 --data-dir DIR"]
#   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test test-avx2 lint summary bench compare notebook clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev,export]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) scripts/train.py $(ARGS)

# ruff with the project's rules (pyproject.toml, [tool.ruff]); .ci/run runs it before the tests
lint: $(STAMP)
	$(VENV)/bin/ruff check .

CPU := $(PY) -c "from common.runtime import cpu_summary; print('cpu:', cpu_summary())"

test: $(STAMP)
	@$(CPU)
	$(PY) -m pytest -q tests $(ARGS)

# The numerical tests with the CPU libraries capped at AVX2 (common.runtime.AVX2_CAPS): on an
# AVX-512 machine, the numbers an AVX2 machine computes (docs/fidelity.md).
AVX2_CAPS := ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell
# (of tests/test_distributed.py only the checks of numbers: its launcher and resume tests are
# the same on both instruction sets)
NUMERIC_TESTS := tests/test_equivalence.py tests/test_recipes.py tests/test_fast_paths.py tests/test_isa.py \
	tests/test_numerics_family.py tests/test_distributed.py::test_two_workers_equal_one_process \
	tests/test_distributed.py::test_the_check_would_see_summed_gradients
test-avx2: $(STAMP)
	@env $(AVX2_CAPS) $(CPU)
	env $(AVX2_CAPS) $(PY) -m pytest -q $(NUMERIC_TESTS) $(ARGS)

summary: $(STAMP)
	$(PY) scripts/summary.py $(ARGS)

compare: $(STAMP)
	$(PY) scripts/compare.py $(ARGS)

bench: $(STAMP)
	$(PY) scripts/bench.py $(ARGS)

# notebooks/googlenet.ipynb executed headless on $(GOOGLENET_BACKEND); e.g. ARGS="--smoke --out runs/nb.ipynb"
notebook: $(STAMP)
	$(PY) scripts/run_notebook.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
