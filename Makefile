# Two entry points for a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0

.PHONY: demo test install data clean study

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Without a GPU take the CPU build of torch (on this kind of machine it lies on disk); with one, pip's default.
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install -q "torch>=2.4"; \
	else \
		$(PY) -m pip install -q "torch==$(TORCH_VERSION)" || \
		$(PY) -m pip install -q "torch==$(TORCH_VERSION)" --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST from Debian where apt exists and we are root; otherwise the code falls back to sklearn's digits.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 || \
		echo "could not install dataset-fashion-mnist; using sklearn digits"; \
	fi

demo: $(STAMP) data
	$(VENV)/bin/sra train

test: $(STAMP) data
	$(PY) -m pytest tests

# The Fashion-MNIST study behind docs/RESULTS.md: every run of experiments/fmnist_study.yaml not yet done (hours on a
# CPU; re-running resumes), then the report. `python experiments/run.py --dry-run` lists what it would run.
study: $(STAMP) data
	$(PY) experiments/run.py --jobs 2 --threads 1
	$(PY) experiments/report.py

clean:
	rm -rf $(VENV) runs .pytest_cache
