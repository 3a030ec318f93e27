# Two entry points, each creating the environment it needs on a fresh machine:
#   make demo   run the main job on the embedded default dataset
#   make test   run ruff and the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A local CPU build of PyTorch; an unpinned torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
DEMO_OUT ?= demo

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e .
	touch $@

# Not the `vision` extra: PyPI's torchvision wheels are CUDA builds that do not load beside the
# CPU torch, and timm imports torchvision. silero-vad's wheel holds real weights for a test
# (which skips, naming the reason, where the wheel cannot be fetched).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[dev,tensorboard,media,text]"
	-$(BIN)/python -m pip download -q --no-deps silero-vad==6.2.3 -d $(VENV)/wheels
	touch $@

demo: $(VENV)/.installed
	$(BIN)/unipair compare --config configs/handwritten.yaml --methods joint,ogm_ge,mla,pgm \
		--seeds 0,1,2 --jobs 2 --out $(DEMO_OUT)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

test: lint
	-@command -v chromium >/dev/null 2>&1 || scripts/install_chromium.sh
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
