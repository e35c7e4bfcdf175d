# Two commands do all set-up on a fresh machine (Python 3.11 and the package registries only):
#   make quickstart   # install, then run the embedded default suite offline
#   make test         # install, then run the test suite
VENV ?= .venv
PYTHON ?= python3.11
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data browser quickstart docs lint test

$(BIN)/nonxfer-bench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,imagenet]'
	# torchattacks pins requests~=2.25, which conflicts with mlflow; it runs fine with newer requests.
	$(BIN)/pip install -q --no-deps torchattacks==3.5.1
	touch $@

setup: $(BIN)/nonxfer-bench

$(FASHION_MNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

data: $(FASHION_MNIST)

# Debian's headless Chromium renders the MLflow UI and the HTML report in tests/test_dashboards.py.
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq chromium

browser: $(CHROMIUM)

quickstart: setup data
	$(BIN)/nonxfer-bench run suites/quickstart.yaml

# The docs site (mkdocs.yml, docs/): the reference pages are generated from the registries at build time.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The layers of pyproject's import-linter contracts, checked on the package laid out as installed (attacks/ inside
# nonxfer_bench/, as setuptools' package-dir maps it), so it runs from a plain checkout.
lint: setup
	$(BIN)/ruff check nonxfer_bench attacks tests benchmarks
	$(BIN)/ruff format --check nonxfer_bench attacks tests benchmarks
	layout=$$(mktemp -d) && cp -r nonxfer_bench "$$layout/" && cp -r attacks "$$layout/nonxfer_bench/attacks" \
	  && cp pyproject.toml "$$layout/" && cd "$$layout" && PYTHONPATH="$$layout" $(CURDIR)/$(BIN)/lint-imports --no-cache; \
	  status=$$?; rm -rf "$$layout"; exit $$status

# Two pytest-xdist workers: most tests run one torch thread, so a second worker uses the second core (the digits zoo
# is trained once and shared under a file lock, tests/conftest.py).
test: setup data browser docs lint
	$(BIN)/python -m pytest -q -n 2
