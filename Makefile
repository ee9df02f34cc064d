# Two set-up commands on a fresh machine: `make demo` (main job end to end) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR := demo
DEMO_CASES ?= 24
DEMO_SEED ?= 0

.PHONY: install demo test lint clean-demo

install: $(VENV)/.installed

# torch 2.14.1 / torchvision 0.29.1 come from this machine's local wheel index (see DEVELOPERS.md).
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

demo: install
	$(PY) scripts/demo_data.py --out_dir $(DEMO_DIR)/data --num_cases $(DEMO_CASES) --seed $(DEMO_SEED)
	$(PY) -m monai.bundle run --config_file configs/mask_preview.json \
		--datalist $(DEMO_DIR)/data/datalist.json --output_dir $(DEMO_DIR)/outputs/mask_preview \
		2>&1 | tee $(DEMO_DIR)/mask_preview.log
	@echo "demo outputs: $(DEMO_DIR)/data (phantom volumes + datalist), $(DEMO_DIR)/outputs/mask_preview (volumes, provenance, PNG previews, report.json)"

test: install
	$(PY) -m pytest -q tests

lint: install
	$(PY) -m ruff check bundle scripts tests

clean-demo:
	rm -rf $(DEMO_DIR)
