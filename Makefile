# Two commands on a fresh machine; each creates the environment (.venv) on first use.
#   make train [ARGS="--backend paddle --epochs 2 --data-dir DIR"]
#   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test summary bench compare notebook clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev,export]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) scripts/train.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q tests $(ARGS)

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
