# Two entry points: `make serve` (install + demo data + serve) and `make test` (install + all tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 5006

.PHONY: serve test install install-test system-deps demo bench clean image test-image

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test system-deps

# Debian packages the tests need (Chromium for the browser tests; Playwright drives it).
system-deps:
	bash deploy/install-system-deps.sh

demo: install
	$(BIN)/eoexplorer demo

serve: install
	$(BIN)/eoexplorer serve --demo --port $(PORT)

test: install-test
	$(BIN)/eoexplorer demo --catalog .cache/demo/catalog.sqlite --data-dir .cache/demo/data  # for tests/ui
	$(BIN)/python -m pytest -q

# The container image (deploy/Dockerfile; podman where no Docker engine answers), smoke-tested
# inside its build; `make image IMAGE_ARGS=--demo` bakes in the demo data.
image:
	bash deploy/build-local.sh $(IMAGE_ARGS)

# Builds the image and checks it (slow, so not part of `make test`): tests/deploy/test_image_build.py
test-image: $(VENV)/.installed-test
	bash deploy/install-system-deps.sh --image
	$(BIN)/python -m pytest -q -m image tests/deploy/test_image_build.py

bench: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@echo "run e.g.: $(BIN)/python bench/catalog.py ; $(BIN)/python bench/tiles.py"

clean:
	rm -rf $(VENV) .pytest_cache .cache
