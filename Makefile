# One command to test: `make test`. It creates or reuses the virtual environment, builds or reuses
# the control-plane binaries, then runs every quality gate and every test suite (end-to-end included).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
BIN := $(VENV)/bin
# The environment is shared between checkouts (hack/ensure-venv.sh), and its editable install points
# at whichever checkout ran last: this checkout's sources come first for everything make runs.
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)/worker:$(CURDIR)

.PHONY: test venv binaries system-deps lint typecheck imports pytest chaos crds constraints quickstart images containers clean

# The three slow prerequisites (pip, Go builds, image builds) overlap: mostly downloads and disk on one
# side, compilers on the other; the gates then run one after another.
test:
	@$(MAKE) --no-print-directory -j3 venv binaries images
	@$(MAKE) --no-print-directory lint typecheck imports pytest

venv:
	@bash hack/ensure-venv.sh >/dev/null

binaries:
	@bash hack/build-binaries.sh >/dev/null

system-deps:
	@bash hack/ensure-system-deps.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint images/operator/Dockerfile images/worker/Dockerfile

typecheck: venv
	$(BIN)/mypy

imports: venv
	$(BIN)/lint-imports

pytest: venv binaries system-deps images
	SUSTAINDIFFUSION_K8S_BIN_DIR="$$(bash hack/build-binaries.sh 2>/dev/null | tail -n 1)" \
	  $(BIN)/pytest $(PYTEST_ARGS)
	@bash hack/check-no-leftovers.sh

# The chaos suite in full (20 operator kills, more pods and messages); `make test` runs it bounded.
chaos: venv binaries system-deps
	SUSTAINDIFFUSION_CHAOS=full SUSTAINDIFFUSION_K8S_BIN_DIR="$$(bash hack/build-binaries.sh 2>/dev/null | tail -n 1)" \
	  $(BIN)/pytest -m chaos -s $(PYTEST_ARGS)
	@bash hack/check-no-leftovers.sh

# The container suite alone, its measurements printed: the images run by a real kubelet.
containers: venv binaries system-deps images
	SUSTAINDIFFUSION_K8S_BIN_DIR="$$(bash hack/build-binaries.sh 2>/dev/null | tail -n 1)" \
	  $(BIN)/pytest -m containers -s $(PYTEST_ARGS)
	@bash hack/check-no-leftovers.sh

# The quickstart: tiny offline models, a small local search, and its report (out/quickstart/report).
quickstart: venv
	$(BIN)/sustaindiffusion-worker build-tiny-models examples/tiny-models
	$(BIN)/sustaindiffusion run examples/quickstart.yaml --out out/quickstart
	$(BIN)/sustaindiffusion report out/quickstart
	$(BIN)/sustaindiffusion export-profile out/quickstart --rule knee

# Regenerate crds/sustainsearch.yaml from the pydantic models (a unit test fails when it is stale).
crds: venv
	$(BIN)/python -m sustaindiffusion.api.crd --write

# The operator and worker images as OCI archives (out/images/*.tar), built with podman, offline by
# default; unchanged inputs reuse the cached archives. `make images IMAGES=worker` builds one.
images: system-deps
	@bash hack/build-images.sh $(IMAGES)

constraints: venv
	$(BIN)/pip freeze --exclude-editable | grep -v '^sustaindiffusion' \
	  | sed '1i # Exact versions the tests run with (pip install -c constraints.txt). Regenerate with `make constraints`.' \
	  > constraints.txt

clean:
	rm -f $(VENV)
	rm -rf .mypy_cache .pytest_cache .ruff_cache
