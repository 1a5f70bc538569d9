# The README's two commands:
#   make quickstart   build the environment on a fresh machine, then run the main job (the quickstart notebook,
#                     full profile, on the embedded default) -> artifacts/notebooks/00_quickstart/
#   make test         build the environment if needed, then run the tests: unit tests + every notebook (smoke)
#                     + `nbseg reproduce --profile smoke` of two notebooks on a tiny world (tests/test_reproduce.py)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the exact torch of our machines and CI; pyproject.toml declares compatible ranges for users' own builds
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup quickstart test notebooks world benchmarks clean-artifacts

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[notebooks,dev]'
	touch $(STAMP)

setup: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/nbseg world --size 192
	$(BIN)/nbseg notebooks run 00_quickstart --profile full

test: $(STAMP)
	$(BIN)/python -m pytest

# Every numbered notebook under the full profile (long on a CPU).
notebooks: $(STAMP)
	$(BIN)/nbseg notebooks run --profile full

world: $(STAMP)
	$(BIN)/nbseg world
	$(BIN)/nbseg world --size 192

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/extract_speed.py
	$(BIN)/python benchmarks/world_stats.py
	$(BIN)/python benchmarks/embedded_quality.py
	$(BIN)/python benchmarks/probe_notebooks.py --profile full
	$(BIN)/python benchmarks/alignseg_world.py
	$(BIN)/python benchmarks/feature_cache.py
	$(BIN)/python benchmarks/dcn_world.py

clean-artifacts:
	rm -rf artifacts
