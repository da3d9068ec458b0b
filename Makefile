# objdecomp: every user-facing command. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
OBJDECOMP := $(PY) -m objdecomp
RESULTS := $(or $(OBJDECOMP_RESULTS),results)
BASE := experiments/_base/default.yaml
EXP_FILE = experiments/$(EXP).yaml
# Newest last.ckpt of experiment $(EXP), used by `make eval` when CKPT is not given.
LAST_CKPT = $(shell ls -t $(RESULTS)/$(EXP)/*/checkpoints/last.ckpt 2>/dev/null | head -n 1)

.PHONY: help install test test-slow train eval tables sweep data gallery demo \
        bench-metrics bench-data bench-learn bench-speed figure4 experiments clean

help:
	@echo "make install                      create .venv and install objdecomp with its pinned dependencies"
	@echo "make test | test-slow             fast test tier | slow tier (DDP, resume, every experiment config)"
	@echo "make demo                         train DTI-Sprites on procedural Tetrominoes (CPU, <10 min) and evaluate"
	@echo "make train EXP=<name> [ARGS=...]  objdecomp fit on experiments/<name>.yaml (make experiments lists them)"
	@echo "make eval [EXP=<name> CKPT=<path>] test a checkpoint (default: newest last.ckpt) and render the tables"
	@echo "make tables                       render the paper tables from $(RESULTS)/*.json"
	@echo "make sweep SWEEP=<name>           create a W&B sweep from experiments/sweeps/<name>.yaml and run an agent"
	@echo "make data DATASET=<name>          download, verify and prepare a real dataset"
	@echo "make gallery DATASET=<name>       PNG grid of a dataset's samples and ground truth"
	@echo "make bench-metrics | bench-data | bench-learn EXP=<name> | bench-speed"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade --quiet pip

install: $(PY)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	@$(PY) -c "import objdecomp, torch, pytorch_lightning; print('objdecomp installed: torch', torch.__version__, '| lightning', pytorch_lightning.__version__)"

test:
	$(PY) -m pytest -q

test-slow:
	$(PY) -m pytest -q -m slow

experiments:
	@cd experiments && find . -name '*.yaml' -not -path './_base/*' -not -path './sweeps/*' | sed 's|^\./||; s|\.yaml$$||' | sort

check-exp:
	@if [ -z "$(EXP)" ] || [ ! -f "$(EXP_FILE)" ]; then \
	  echo "unknown experiment '$(EXP)' (no $(EXP_FILE)). Experiments:"; $(MAKE) --no-print-directory experiments; exit 2; fi

train: check-exp
	$(OBJDECOMP) fit --config $(BASE) --config $(EXP_FILE) --experiment $(EXP) $(ARGS)

eval:
ifdef EXP
	@$(MAKE) --no-print-directory check-exp EXP=$(EXP)
	@ckpt="$(or $(CKPT),$(LAST_CKPT))"; if [ -z "$$ckpt" ]; then \
	  echo "no checkpoint for $(EXP) under $(RESULTS)/$(EXP)/*/checkpoints/; train it first or pass CKPT=<path>"; exit 2; fi; \
	$(OBJDECOMP) test --config $(BASE) --config $(EXP_FILE) --experiment $(EXP) --ckpt_path="$$ckpt" $(ARGS)
else
	@for exp in $$($(MAKE) --no-print-directory experiments); do \
	  ckpt=$$(ls -t $(RESULTS)/$$exp/*/checkpoints/last.ckpt 2>/dev/null | head -n 1); \
	  [ -n "$$ckpt" ] && $(OBJDECOMP) test --config $(BASE) --config experiments/$$exp.yaml --experiment $$exp --ckpt_path="$$ckpt" $(ARGS); \
	done; true
endif
	$(OBJDECOMP) tables

tables:
	$(OBJDECOMP) tables

sweep:
	@[ -f experiments/sweeps/$(SWEEP).yaml ] || { echo "unknown sweep '$(SWEEP)'; sweeps:"; ls experiments/sweeps; exit 2; }
	$(VENV)/bin/wandb sweep experiments/sweeps/$(SWEEP).yaml 2>&1 | tee /dev/stderr | \
	  sed -n 's/.*wandb agent \(.*\)$$/\1/p' | tail -n 1 | xargs -r $(VENV)/bin/wandb agent

data:
	$(OBJDECOMP) data $(DATASET)

gallery:
	$(OBJDECOMP) gallery $(DATASET)

demo:
	$(MAKE) --no-print-directory train EXP=quick/dti_sprites_tetrominoes ARGS="--trainer.max_time=00:00:08:00 $(ARGS)"
	$(MAKE) --no-print-directory eval EXP=quick/dti_sprites_tetrominoes

bench-metrics:
	$(PY) benchmarks/bench_metrics.py

bench-data:
	$(PY) benchmarks/bench_data.py

bench-learn: check-exp
	$(PY) benchmarks/bench_dti_learn.py --exp $(EXP) $(ARGS)

bench-speed:
	$(PY) benchmarks/bench_dti_speed.py $(ARGS)

clean:
	rm -rf galleries lightning_logs wandb .pytest_cache
