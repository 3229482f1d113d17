# The README's two commands: `make run` (the sampling study at the tiny scale) and `make test`.
# `make run` writes runs/tiny/sampling, beside the committed results/tiny/sampling, never over it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup setup-dev setup-gpu data browser run test

# `make run` needs the package alone; `make test` adds the dev extras (pytest, notebooks, trackers).
# --no-compile, then one import of what a run's processes import with bytecode writing on: pip
# compiling all of torch's and Ray's modules took 45 s of a 2-minute install on a 2-core AMD EPYC,
# and with PYTHONDONTWRITEBYTECODE set (as on CI machines) nothing else would write them, so every
# process (the driver, each Ray worker, the figure step, each test's subprocess) compiled torch again:
# 18 s to import these modules without bytecode, 7 s with it.
# Run from inside the venv, so that only the venv's modules get bytecode, never the repository's. Two
# processes, torch's modules in one and the rest in the other: the same 3,908 files as one process, in
# 14-17 s instead of 24-29 (same machine, alternated).
WRITE_BYTECODE := cd $(VENV) && env -u PYTHONDONTWRITEBYTECODE ./bin/python -c
# analysis/ imports statsmodels (with formulaic and patsy), and saving a PDF imports fontTools: without their
# bytecode every analysis process compiled those ~350 modules again (about 1 s each time).
SAVE_FIGURE := import io, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; \
	figure = plt.figure(); figure.text(0.5, 0.5, 'x'); [figure.savefig(io.BytesIO(), format=f) for f in ('pdf', 'png')]
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e .
	( $(WRITE_BYTECODE) "import torch._inductor, torchvision" ) & torch_modules=$$!; \
	( $(WRITE_BYTECODE) "import ray.tune, pandas, pyarrow.parquet, sklearn.svm, sklearn.metrics, seaborn, scipy.stats, \
		faiss, mpmath, statsmodels.formula.api, statsmodels.stats.power, statsmodels.stats.multitest; \
		$(SAVE_FIGURE)" ); rest=$$?; wait $$torch_modules && exit $$rest
	touch $@

# The tests start Ray about 20 times, and Ray's own processes (its dashboard, agents and monitors) import
# modules that no import above reaches: one start and stop of a local Ray writes theirs (a start then took
# 4.5-6.0 s instead of 7.1-7.5).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-compile -e ".[dev]"
	$(WRITE_BYTECODE) "import pytest, xdist, nbclient, nbformat, ipykernel.kernelapp; import ray; \
		ray.init(address='local', include_dashboard=False, configure_logging=False); ray.shutdown()"
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

# GPU machines: faiss-gpu in place of faiss-cpu (they install the same `faiss` package, so one at a time).
setup-gpu: setup
	$(PY) -m pip uninstall --quiet --yes faiss-cpu
	$(PY) -m pip install --quiet "faiss-gpu>=1.7"

# Fashion-MNIST from Debian's package when apt is there and the files are not; otherwise the
# trainer says where it looked and how to get the data.
data:
	@if [ ! -f $(FASHION_MNIST) ] && command -v apt-get >/dev/null 2>&1; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	fi

# Headless Chromium from Debian's package, for the HTML report's rendering test; without apt the test is
# skipped and says how to get it.
browser:
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 && \
		command -v apt-get >/dev/null 2>&1; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null || \
		echo "could not install chromium; the HTML report's rendering test will be skipped"; \
	fi

run: setup data
	$(PY) -m study.run sampling

# Two test processes: most of the suite's time is in studies run end to end through Ray, which leave a core
# idle while a driver or a node starts. On a 2-core AMD EPYC the suite took 949 s so, 1,488 s in one process.
test: setup-dev browser
	$(PY) -m pytest -q -n 2
