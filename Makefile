# ssl-lightning: the commands the README uses.
PYTHON ?= python
export WANDB_MODE ?= offline

.PHONY: install test lint format pretrain probe sweep data bench

install:            ## README command 1: the package, its dependencies and the dev tools
	$(PYTHON) -m pip install -e ".[dev]"

test:               ## README command 2: the whole test suite (CPU, ~minutes)
	$(PYTHON) -m pytest -q --durations=15

lint:               ## ruff lint + format check
	$(PYTHON) -m ruff check ssl_lightning tests experiments
	$(PYTHON) -m ruff format --check ssl_lightning tests experiments

format:
	$(PYTHON) -m ruff format ssl_lightning tests experiments
	$(PYTHON) -m ruff check --fix ssl_lightning tests experiments

pretrain:           ## SimCLR on the default dataset (override: make pretrain ARGS="method=barlow_twins")
	ssl-train $(ARGS)

probe:              ## linear probe of a checkpoint: make probe CKPT=outputs/.../checkpoints/last.ckpt
	ssl-train method=probe method.mode=linear method.pretrained=$(CKPT) $(ARGS)

sweep:              ## a Hydra multirun over both SSL methods
	ssl-train -m method=simclr,barlow_twins $(ARGS)

data:               ## generate the built-in jets by hand (the default dataset also does it itself)
	mkdir -p data/jets && ssl-make-jets --num-jets 6000 --seed 0 --out data/jets/jets_manual.h5 --workers 2

bench:              ## images/s of the training step vs a bare-PyTorch ceiling: on a CUDA machine the
                    ## GPU grid -> docs/results/bench_gpu_<date>.json, else the CPU -> bench_results.json
	$(PYTHON) experiments/bench.py $(ARGS)

.PHONY: bench-gpu
bench-gpu:          ## the GPU bench only: without CUDA it says so in one line (ARGS as for bench)
	$(PYTHON) experiments/bench.py --device gpu $(ARGS)

.PHONY: study
study:              ## label-efficiency study, small preset (~15 min on 2 CPU cores) -> studies/
	$(PYTHON) experiments/label_efficiency.py experiment=label_efficiency_small $(ARGS)
