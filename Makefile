# Two set-up commands on a fresh machine: `make demo` (main job end to end) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LABEL_VENV := .venv-monailabel
DEPLOY_VENV := .venv-deploy
DEMO_DIR := demo
DEMO_CASES ?= 60
DEMO_SEED ?= 0

.PHONY: install demo meddiffft-demo meddiffft-experiment vgmedgen-demo vgmedgen-experiment test lint clean-demo bench bench-quick package monailabel-env deploy-env

install: $(VENV)/.installed

# torch 2.14.1 / torchvision 0.29.1 come from this machine's local wheel index (README.md, Set-up).
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Demo data -> stage 1 (MSC) -> stage 2 (guided UNet) -> lesion synthesis into the normal test cases -> text
# adherence of the synthesised lesions, with the phantom's real lesions as the reference.
demo: install
	rm -rf $(DEMO_DIR)/runs $(DEMO_DIR)/outputs
	$(PY) scripts/demo_data.py --out_dir $(DEMO_DIR)/data --num_cases $(DEMO_CASES) --seed $(DEMO_SEED)
	$(PY) -m monai.bundle run --config_file configs/train_msc.json --dataset_dir $(DEMO_DIR)/data \
		--output_dir $(DEMO_DIR)/runs/train_msc 2>&1 | tee $(DEMO_DIR)/train_msc.log
	$(PY) -m monai.bundle run --config_file configs/train.json --dataset_dir $(DEMO_DIR)/data \
		--output_dir $(DEMO_DIR)/runs/train 2>&1 | tee $(DEMO_DIR)/train.log
	$(PY) scripts/synthesis_requests.py --datalist $(DEMO_DIR)/data/datalist.json --output $(DEMO_DIR)/data/requests.json
	$(PY) -m monai.bundle run --config_file configs/inference.json --datalist $(DEMO_DIR)/data/requests.json \
		--output_dir $(DEMO_DIR)/outputs/synthesis 2>&1 | tee $(DEMO_DIR)/inference.log
	$(PY) scripts/text_adherence.py --requests $(DEMO_DIR)/data/requests.json \
		--synthesis_dir $(DEMO_DIR)/outputs/synthesis --datalist $(DEMO_DIR)/data/datalist.json \
		--output $(DEMO_DIR)/outputs/text_adherence.json --figure $(DEMO_DIR)/outputs/text_adherence.png \
		| tee $(DEMO_DIR)/text_adherence.log
	@echo "demo outputs: models/ (trained weights), $(DEMO_DIR)/runs (logs, TensorBoard, validation samples), $(DEMO_DIR)/outputs/synthesis (volumes, provenance, PNG previews, report.json), $(DEMO_DIR)/outputs/text_adherence.json and .png (does each lesion follow its text; through-plane coherence vs the phantom's real lesions)"

# MedDiff-FT (docs/meddiffft.md), tiny profile: demo data (if absent) -> stand-in foundation on the normal slices ->
# fine-tuning on K = 8 lesion cases -> image-lesion pairs in normal host vertebrae (mask generator, dynamic guiding
# mask, quality filter, eroded labels) with a datalist configs/segment.json reads.
meddiffft-demo: install
	rm -rf $(DEMO_DIR)/runs/meddiffft_pretrain $(DEMO_DIR)/runs/meddiffft_finetune $(DEMO_DIR)/outputs/meddiffft_pairs
	test -f $(DEMO_DIR)/data/datalist.json || \
		$(PY) scripts/demo_data.py --out_dir $(DEMO_DIR)/data --num_cases $(DEMO_CASES) --seed $(DEMO_SEED)
	$(PY) -m monai.bundle run --config_file configs/meddiffft_pretrain.json --dataset_dir $(DEMO_DIR)/data \
		--output_dir $(DEMO_DIR)/runs/meddiffft_pretrain 2>&1 | tee $(DEMO_DIR)/meddiffft_pretrain.log
	$(PY) -m monai.bundle run --config_file "['configs/meddiffft_pretrain.json','configs/meddiffft_finetune.json']" \
		--dataset_dir $(DEMO_DIR)/data --output_dir $(DEMO_DIR)/runs/meddiffft_finetune 2>&1 | tee $(DEMO_DIR)/meddiffft_finetune.log
	$(PY) -m monai.bundle run --config_file configs/meddiffft_pairs.json --dataset_dir $(DEMO_DIR)/data \
		--pairs_dir $(DEMO_DIR)/outputs/meddiffft_pairs 2>&1 | tee $(DEMO_DIR)/meddiffft_pairs.log
	@echo "MedDiff-FT demo outputs: models/meddiffft_foundation, models/meddiffft (weights), $(DEMO_DIR)/runs/meddiffft_* (logs, TensorBoard), $(DEMO_DIR)/outputs/meddiffft_pairs (synthetic volumes, eroded lesion labels, provenance, PNG previews, report.json, datalist.json for configs/segment.json)"

# MedDiff-FT's segmentation experiment (docs/meddiffft.md, "Segmentation experiment"): synthesis models, pairs per arm
# and ablation, component checks M2-M5, configs/segment.json per arm and seed; rewrites that section of the docs.
# Resumable (the work folder keeps finished steps). MEDDIFFFT_PRESET=default for the longer run.
MEDDIFFFT_PRESET ?= quick
meddiffft-experiment: install
	test -f $(DEMO_DIR)/data/datalist.json || \
		$(PY) scripts/demo_data.py --out_dir $(DEMO_DIR)/data --num_cases $(DEMO_CASES) --seed $(DEMO_SEED)
	OMP_NUM_THREADS=1 $(PY) -m bundle.experiments.meddiffft_segmentation --preset $(MEDDIFFFT_PRESET) \
		--datalist $(DEMO_DIR)/data/datalist.json --work_dir runs/meddiffft_experiment_$(MEDDIFFFT_PRESET) \
		2>&1 | tee $(DEMO_DIR)/meddiffft_experiment.log

# VG-MedGen (docs/vgmedgen.md), tiny profile: demo data (made when missing) -> measured captions -> stage V (visual
# disentanglement) -> stage T (text disentanglement) -> stage G (fusion + DiT) -> crops generated from the
# training cases' captions (one-slice volumes, provenance, previews, index.html, a datalist configs/classify.json reads).
VGMEDGEN_DIR ?= $(DEMO_DIR)/vgmedgen
VGMEDGEN_MODELS ?= models/vgmedgen
VGMEDGEN_EPOCHS_V ?= 10
VGMEDGEN_EPOCHS_T ?= 20
VGMEDGEN_EPOCHS_G ?= 8

vgmedgen-demo: install
	test -f $(DEMO_DIR)/data/datalist.json || $(PY) scripts/demo_data.py --out_dir $(DEMO_DIR)/data \
		--num_cases $(DEMO_CASES) --seed $(DEMO_SEED)
	rm -rf $(VGMEDGEN_DIR)
	mkdir -p $(VGMEDGEN_DIR)
	$(PY) scripts/vgmedgen_captions.py --datalist $(DEMO_DIR)/data/datalist.json \
		--output $(VGMEDGEN_DIR)/datalist.json --report $(VGMEDGEN_DIR)/captions.json
	$(PY) -m monai.bundle run --config_file configs/vgmedgen_train_visual.json --datalist $(VGMEDGEN_DIR)/datalist.json \
		--models_dir $(VGMEDGEN_MODELS) --output_dir $(VGMEDGEN_DIR)/runs/visual --max_epochs $(VGMEDGEN_EPOCHS_V) \
		2>&1 | tee $(VGMEDGEN_DIR)/train_visual.log
	$(PY) -m monai.bundle run --config_file configs/vgmedgen_train_text.json --datalist $(VGMEDGEN_DIR)/datalist.json \
		--models_dir $(VGMEDGEN_MODELS) --output_dir $(VGMEDGEN_DIR)/runs/text --max_epochs $(VGMEDGEN_EPOCHS_T) \
		2>&1 | tee $(VGMEDGEN_DIR)/train_text.log
	$(PY) -m monai.bundle run --config_file configs/vgmedgen_train.json --datalist $(VGMEDGEN_DIR)/datalist.json \
		--models_dir $(VGMEDGEN_MODELS) --output_dir $(VGMEDGEN_DIR)/runs/generator --max_epochs $(VGMEDGEN_EPOCHS_G) \
		2>&1 | tee $(VGMEDGEN_DIR)/train_generator.log
	$(PY) -m monai.bundle run --config_file configs/vgmedgen_inference.json --datalist $(VGMEDGEN_DIR)/datalist.json \
		--models_dir $(VGMEDGEN_MODELS) --output_dir $(VGMEDGEN_DIR)/outputs \
		2>&1 | tee $(VGMEDGEN_DIR)/inference.log
	@echo "VG-MedGen demo outputs: $(VGMEDGEN_MODELS) (stage V, T and G weights), $(VGMEDGEN_DIR)/outputs (crops, provenance, previews, index.html, report.json, datalist.json for configs/classify.json)"

# VG-MedGen's evidence (docs/vgmedgen.md section 9, rewritten by the command): caption fidelity, disentanglement, text
# control, the Table-1 and Table-2 analogues against the four ablations, several seeds. A killed run resumes.
VGMEDGEN_PRESET ?= default

vgmedgen-experiment: install
	mkdir -p runs
	$(PY) -m bundle.experiments.vgmedgen_evidence --preset $(VGMEDGEN_PRESET) \
		--work_dir runs/vgmedgen_evidence_$(VGMEDGEN_PRESET) 2>&1 | tee runs/vgmedgen_evidence_$(VGMEDGEN_PRESET).log

# The MONAI Label server's own environment, layered over $(VENV) (apps/monailabel/env/build.sh says why); built once.
monailabel-env: $(LABEL_VENV)/.installed

$(LABEL_VENV)/.installed: $(VENV)/.installed $(addprefix apps/monailabel/env/,build.sh requirements.txt pydicom3_compat.py)
	apps/monailabel/env/build.sh $(VENV) $(LABEL_VENV)

test: install monailabel-env deploy-env
	$(PY) -m pytest -q tests

# Lint (pyflakes, line length 120, import order, complexity, bugbear) and formatting: pyproject.toml [tool.ruff].
lint: install
	$(PY) -m ruff check bundle scripts tests benchmarks apps
	$(PY) -m ruff format --check bundle scripts tests benchmarks apps

# Speed and scale figures against reference implementations; the full run regenerates docs/performance.md.
bench: install
	$(PY) -m benchmarks --out runs/benchmarks

bench-quick: install
	$(PY) -m benchmarks --quick --out runs/benchmarks_quick

# The bundle other MONAI projects download: dist/<metadata name>.zip (configs, bundle/, models/, docs/, LICENSE).
package: install
	$(PY) scripts/package.py --models_dir models --output_dir dist

# The MONAI Deploy app's environment (apps/deploy): the App SDK and Holoscan as a layer over $(VENV), built once.
deploy-env: $(DEPLOY_VENV)/.installed

$(DEPLOY_VENV)/.installed: apps/deploy/requirements.txt apps/deploy/build_env.sh $(VENV)/.installed
	apps/deploy/build_env.sh $(VENV) $(DEPLOY_VENV)

clean-demo:
	rm -rf $(DEMO_DIR)
