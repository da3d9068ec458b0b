# objdecomp: every user-facing command. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
OBJDECOMP := $(PY) -m objdecomp
# `make demo`: a number of optimizer steps, so that a slower or busier machine prints the same
# numbers, about 10 minutes on a quiet machine (benchmarks/RESULTS.md). One thread everywhere: a
# float reduction's result depends on how it is split between threads, and on a busy machine a
# second thread made each step 3x slower, not faster.
DEMO_EXP := quick/dti_sprites_tetrominoes
DEMO_STEPS := 3000
RESULTS := $(or $(OBJDECOMP_RESULTS),results)
# An experiment file names its parent; the CLI reads _base/default.yaml and the parents before it
# (objdecomp.cli.experiment_config_files), so one --config is the whole experiment.
EXP_FILE = experiments/$(EXP).yaml

.PHONY: help install test test-slow train eval tables compare report sweep data gallery demo \
        bench-metrics bench-data bench-learn bench-speed bench-speed-redo bench-speed-perturbgan \
        figure4 experiments clean

help:
	@echo "make install                      create .venv and install objdecomp with its pinned dependencies"
	@echo "make test | test-slow [SHARD=i/n] fast test tier | slow tier (DDP, resume, every experiment config)"
	@echo "make demo                         train DTI-Sprites on procedural Tetrominoes ($(DEMO_STEPS) steps, ~10 min) and evaluate"
	@echo "make train EXP=<name> [ARGS=...]  objdecomp fit on experiments/<name>.yaml (make experiments lists them)"
	@echo "make eval [EXP=<name> CKPT=<path>] test the newest best.ckpt (else last.ckpt) on the splits its tables need, render the tables"
	@echo "make tables                       render the paper tables from $(RESULTS)/*.json"
	@echo "make compare [BUDGET=min|STEPS=n SEEDS='0 1 2' ONLY=glob]  every method on every procedural"
	@echo "                                  benchmark, one protocol: $(RESULTS)/compare/COMPARISON.md + chart (resumable)"
	@echo "make report                       one page: every paper table, the comparison, the key figures ($(RESULTS)/REPORT.md)"
	@echo "make sweep SWEEP=<name>           create a W&B sweep from experiments/sweeps/<name>.yaml and run an agent"
	@echo "make data DATASET=<name>          download, verify and prepare a real dataset"
	@echo "make gallery DATASET=<name>       PNG grid of a dataset's samples and ground truth"
	@echo "make bench-learn EXP=<name>        learning check of any experiment (benchmarks/bench_learn.py; ARGS=--minutes 30 | --steps N)"
	@echo "make bench-metrics | bench-data | bench-speed | bench-speed-redo | bench-speed-perturbgan"
	@echo "  (DTI_SPRITES_CODE=<checkout> make bench-speed, REDO_CODE=<checkout> make bench-speed-redo,"
	@echo "   PERTURBGAN_CODE=<checkout> make bench-speed-perturbgan:"
	@echo "   the authors' code timed in the same invocation, the ratio printed)"
	@echo "make figure4                      ReDO's Figure 4 (supervised curve vs unsupervised) as PNG"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade --quiet pip

install: $(PY)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	@$(PY) -c "import objdecomp, torch, pytorch_lightning; print('objdecomp installed: torch', torch.__version__, '| lightning', pytorch_lightning.__version__)"
	@echo "The objdecomp command is in $(VENV)/bin: run 'source $(VENV)/bin/activate' to use it as the README does (make targets need no activation)."

test:
	$(PY) -m pytest -q

test-slow:  # SHARD=i/n: the i-th of n interleaved parts (CI runs two side by side)
	$(PY) -m pytest -q -m slow --durations=15 $(if $(SHARD),--shard $(SHARD))

experiments:
	@cd experiments && find . -name '*.yaml' -not -path './_base/*' -not -path './sweeps/*' -not -name paper_tables.yaml -not -name comparison.yaml | sed 's|^\./||; s|\.yaml$$||' | sort

check-exp:
	@if [ -z "$(EXP)" ] || [ ! -f "$(EXP_FILE)" ]; then \
	  echo "unknown experiment '$(EXP)' (no $(EXP_FILE)). Experiments:"; $(MAKE) --no-print-directory experiments; exit 2; fi

train: check-exp
	$(OBJDECOMP) fit --config $(EXP_FILE) --experiment $(EXP) $(ARGS)

eval:
	@[ -z "$(EXP)" ] || $(MAKE) --no-print-directory check-exp EXP=$(EXP)
	@status=0; for exp in $(or $(EXP),$$($(MAKE) --no-print-directory experiments)); do \
	  ckpt="$(CKPT)"; [ -n "$$ckpt" ] || ckpt=$$(ls -t $(RESULTS)/$$exp/*/checkpoints/best.ckpt 2>/dev/null | head -n 1); \
	  [ -n "$$ckpt" ] || ckpt=$$(ls -t $(RESULTS)/$$exp/*/checkpoints/last.ckpt 2>/dev/null | head -n 1); \
	  if [ -z "$$ckpt" ]; then \
	    [ -z "$(EXP)" ] && continue; \
	    echo "no checkpoint for $$exp under $(RESULTS)/$$exp/*/checkpoints/; train it first or pass CKPT=<path>"; exit 2; fi; \
	  for split in $$($(OBJDECOMP) tables --splits $$exp); do \
	    $(OBJDECOMP) test --config experiments/$$exp.yaml --experiment $$exp \
	      --ckpt_path="$$ckpt" --eval_split $$split $(ARGS) || status=1; \
	  done; \
	done; exit $$status
	$(OBJDECOMP) tables $(if $(EXP),--experiment $(EXP))

tables:
	$(OBJDECOMP) tables

# The grid, budget and seeds are experiments/comparison.yaml's unless given; a killed compare
# continues where it stopped (objdecomp/compare.py).
compare:
	$(OBJDECOMP) compare $(if $(BUDGET),--budget $(BUDGET)) $(if $(STEPS),--steps $(STEPS)) \
	  $(if $(SEEDS),--seeds $(SEEDS)) $(if $(ONLY),--only $(ONLY)) $(ARGS)

report:
	$(OBJDECOMP) report

# Fails at once, with the reason, when there is no W&B server to hold the sweep; fails when
# `wandb sweep` made no sweep or the agent fails.
sweep:
	@[ -f experiments/sweeps/$(SWEEP).yaml ] || { echo "unknown sweep '$(SWEEP)'; sweeps:"; ls experiments/sweeps; exit 2; }
	@$(PY) -c "import sys; from objdecomp.runs import wandb_sweep_problem; sys.exit(wandb_sweep_problem())"
	@set -o pipefail; \
	  agent=$$($(VENV)/bin/wandb sweep experiments/sweeps/$(SWEEP).yaml 2>&1 | tee /dev/stderr | \
	    sed -n 's/.*wandb agent \(.*\)$$/\1/p' | tail -n 1); \
	  [ -n "$$agent" ] || { echo "make sweep: wandb sweep created no sweep (its output is above)"; exit 1; }; \
	  $(VENV)/bin/wandb agent $$agent

data:
	$(OBJDECOMP) data $(DATASET)

gallery:
	$(OBJDECOMP) gallery $(DATASET)

demo:
	OMP_NUM_THREADS=1 $(OBJDECOMP) fit --config experiments/$(DEMO_EXP).yaml --experiment demo \
	  --seed_everything=0 --trainer.max_steps=$(DEMO_STEPS) --trainer.max_time=null $(ARGS)
	OMP_NUM_THREADS=1 $(OBJDECOMP) test --config experiments/$(DEMO_EXP).yaml --experiment demo \
	  --seed_everything=0 --ckpt_path=last --trainer.logger=false

bench-metrics:
	$(PY) benchmarks/bench_metrics.py

bench-data:
	$(PY) benchmarks/bench_data.py

# The learning check of any method: its experiment trained for a budget, evaluated as `objdecomp test` does.
bench-learn: check-exp
	$(PY) benchmarks/bench_learn.py --exp $(EXP) $(ARGS)

bench-speed:
	$(PY) benchmarks/bench_dti_speed.py $(ARGS)

bench-speed-redo:
	$(PY) benchmarks/bench_redo_speed.py $(ARGS)

bench-speed-perturbgan:
	$(PY) benchmarks/bench_perturbgan_speed.py $(ARGS)

# ReDO's Figure 4 from the redo_supervised_* and redo_* results files (README: ReDO).
figure4:
	$(PY) benchmarks/redo_figure4.py --results $(RESULTS) --out $(RESULTS)/figures/redo_figure4.png $(ARGS)

clean:
	rm -rf galleries lightning_logs wandb .pytest_cache
