# convlstm-bench: `make test` and `make bench` set everything up from a fresh clone.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
# Benchmark profile: quick (default, ~10 min on 2 cores) or full.
PROFILE ?= quick
PYTEST := $(BIN)/python -m pytest parity_tests -q
# Tests marked `slow` (costly variants of tests that also run at a proportionate size) run only in `make test-slow`.
NOT_SLOW := not slow

.PHONY: setup test test-fast test-slow bench bench-full report readme-results lint lock clean

$(STAMP): requirements/lock.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements/lock.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

setup: $(STAMP)

# The whole suite with Keras on TensorFlow, then the Keras tests again on its JAX and torch backends.
# Each run leaves JUnit XML in reports/junit/; the last line adds them up.
test: setup
	rm -rf reports/junit
	$(PYTEST) -m "$(NOT_SLOW)" --junitxml=reports/junit/keras-tensorflow.xml
	KERAS_BACKEND=jax $(PYTEST) -m "keras and $(NOT_SLOW)" --junitxml=reports/junit/keras-jax.xml
	KERAS_BACKEND=torch $(PYTEST) -m "keras and $(NOT_SLOW)" --junitxml=reports/junit/keras-torch.xml
	@$(BIN)/python -m parity_tests.totals reports/junit/*.xml

# One pass, default Keras backend only.
test-fast: setup
	$(PYTEST) -x -m "$(NOT_SLOW)"

# Only the `slow` tests (the T = 1000 stability runs, minutes and gigabytes under Keras on JAX), on every Keras backend.
test-slow: setup
	$(PYTEST) -m slow
	KERAS_BACKEND=jax $(PYTEST) -m "keras and slow"
	KERAS_BACKEND=torch $(PYTEST) -m "keras and slow"

# asv over the benchmark grid (benchmarks/README.md): results in reports/asv/, filed under git HEAD.
bench: setup
	BENCH_PROFILE=$(PROFILE) $(BIN)/python -m benchmarks.run_profile

# Every workload, mode, dtype and variant: hours on a 2-core CPU.
bench-full: setup
	BENCH_PROFILE=full $(BIN)/python -m benchmarks.run_profile

# The self-contained HTML report from reports/asv/ (asv results, environment.json) and reports/parity/.
report: setup
	$(BIN)/convlstm-bench report --results reports/asv/results --parity reports/parity -o reports/html/index.html

# The README's results table from the latest make bench (reports/asv/environment.json).
readme-results: setup
	$(BIN)/python -m reports.results_table --readme README.md

lint: setup
	$(BIN)/ruff check implementations parity_tests benchmarks reports

# Regenerate the exact pins from the current .venv.
lock:
	$(PIP) freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > requirements/lock.txt.new
	{ echo "# Exact pins for the CPU test/bench environment (Python 3.11). Regenerate: make lock"; cat requirements/lock.txt.new; } > requirements/lock.txt
	rm requirements/lock.txt.new

clean:
	rm -rf $(VENV) .asv reports/asv reports/results reports/html reports/parity reports/junit
