# hmr_jax: the README's two commands (`make demo`, `make test`) and a few more.
# Installing is incremental: a stamp file per extra set is rebuilt only when setup.py changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# torch must come from the CPU wheel; installing it first (pinned) keeps pip from ever
# resolving a CUDA build for the `torch` extra (smplx depends on torch).
TORCH_PIN := torch==2.13.0

.PHONY: demo test test-all test-parity test-browser fuzz install-test install-demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.stamp-test: setup.py | $(PY)
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[dev,torch]'
	touch $@

$(VENV)/.stamp-demo: setup.py | $(PY)
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[synthetic]'
	touch $@

install-test: $(VENV)/.stamp-test
install-demo: $(VENV)/.stamp-demo

# Everything except tests marked `slow`.
test: $(VENV)/.stamp-test
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(VENV)/.stamp-test
	$(PY) -m pytest $(PYTEST_ARGS)

test-parity: $(VENV)/.stamp-test
	$(PY) -m pytest -m parity $(PYTEST_ARGS)

# The long fuzz run of every reader of outside files (the default suite runs a quick slice):
# FUZZ_EXAMPLES inputs per reader (default 2000); outcome counts per reader go to fuzz_report.json.
FUZZ_EXAMPLES ?= 2000
fuzz: $(VENV)/.stamp-test
	rm -f fuzz_report.json
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_REPORT=fuzz_report.json \
		$(PY) -m pytest tests/fuzz \
		-s -q -p no:cacheprovider $(PYTEST_ARGS)

# The web app in headless Chromium (tests marked `browser`). Chromium comes from the Debian
# packages (Playwright drives it; `playwright install` would download a browser): installed with
# apt-get when missing and run as root; otherwise the tests are skipped with the reason, except
# under CI=true, where a missing browser is a failure.
CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser)
test-browser: $(VENV)/.stamp-test
	@if [ -z "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "== installing chromium (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
	      || { echo "test-browser: apt-get install chromium failed" >&2; exit 1; }; \
	  elif [ "$$CI" = true ]; then \
	    echo "CI: chromium is missing and cannot be installed here (needs root and apt-get)" >&2; exit 1; \
	  else \
	    echo "test-browser: skipped, no chromium (apt-get install chromium as root, or set HMR_JAX_CHROMIUM)"; exit 0; \
	  fi; \
	fi; \
	$(PY) -m pytest -m browser $(PYTEST_ARGS)

demo: $(VENV)/.stamp-demo
	@$(PY) -m hmr_jax.demo

bench: $(VENV)/.stamp-test
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
