# One command to test: `make test`. It creates or reuses the virtual environment, builds or reuses
# the test environment's binaries and the images, then runs every quality gate and every test suite
# (end-to-end included), and prints how long each phase took.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
BIN := $(VENV)/bin
# The environment is shared between checkouts (hack/ensure-venv.sh), and its editable install points
# at whichever checkout ran last: this checkout's sources come first for everything make runs.
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)/worker:$(CURDIR)
export SUSTAINDIFFUSION_TIMINGS := $(CURDIR)/out/ci/timings.tsv
TIMED := bash hack/timed.sh
BIN_DIR = $$(bash hack/build-binaries.sh --print-dir 2>/dev/null | tail -n 1)

# `make test` runs the phases below at the same time where they do not depend on each other, at most
# TEST_JOBS at once. 6 was chosen by measurement on 2 cores and 24 GiB (README, "Test"): the
# end-to-end suites mostly wait on control planes and worker pods, while the Go builds and the
# unit suites keep the CPUs busy.
TEST_JOBS ?= 6
# One thread per torch process in the tests: up to six suites run torch at once on two cores, and
# torch's own pool (a thread per core, each spinning while it waits for work) then fights the
# other suites' pools. For scale: the tiny SD1 family search took 22 s alone and
# 245 s beside the other suites with the default pool.
export OMP_NUM_THREADS ?= 1

# The test suites: each is one pytest process with its own control plane where it needs one, and
# its own slot (tests/support/slots.py: ports and pod addresses of its own). The last suite, e2e,
# is every test no other suite names, so a new test file always runs. Suites that need nothing
# built start at once; the others as soon as what they need is there. Longest first.
SUITE_containers := tests/e2e/containers
SUITE_kueue := tests/e2e/kueue
SUITE_multikueue := tests/e2e/multikueue
SUITE_chaos := tests/e2e/chaos
SUITE_operator := tests/e2e/test_operator.py
SUITE_observability := tests/e2e/test_observability.py
SUITE_runs := tests/e2e/test_parity.py tests/e2e/test_resilience.py tests/e2e/test_scale.py
SUITE_local := tests/local/test_local_cli.py tests/local/test_families_local.py
SUITE_resume := tests/local/test_local_resume.py
SUITE_worker := tests/worker
SUITE_audit := tests/audit
SUITE_unit := tests/unit
NAMED_SUITES := operator observability local resume chaos runs worker kueue multikueue containers audit unit
SUITE_e2e := tests $(foreach s,$(NAMED_SUITES),$(addprefix --ignore=,$(SUITE_$(s))))
SUITES := $(NAMED_SUITES) e2e

.PHONY: test checks venv binaries system-deps lint typecheck imports pytest chaos crds constraints \
	quickstart images images-layout containers multikueue clean timings \
	bin-control-plane bin-helm bin-kueue bin-kubelet $(addprefix suite-,$(SUITES)) test-k8s k8s-supported

test:
	@rm -f $(SUSTAINDIFFUSION_TIMINGS); mkdir -p out/ci; date +%s > out/ci/started
	@status=0; $(MAKE) --no-print-directory -k -j$(TEST_JOBS) --output-sync=target checks || status=$$?; \
	  python3 hack/timings.py $(SUSTAINDIFFUSION_TIMINGS) --started "$$(cat out/ci/started)"; exit $$status

# Everything `make test` checks; the leftover check runs once every suite has ended.
checks: lint typecheck imports $(addprefix suite-,$(SUITES))
	@bash hack/check-no-leftovers.sh

venv:
	@$(TIMED) venv bash hack/ensure-venv.sh >/dev/null

system-deps:
	@$(TIMED) system-deps bash hack/ensure-system-deps.sh

# The Go builds one after another (two at once would only fight over two cores), the control plane
# first: most suites need only it.
bin-control-plane:
	@$(TIMED) go-control-plane bash hack/build-binaries.sh control-plane >/dev/null
bin-helm: | bin-control-plane
	@$(TIMED) go-helm bash hack/build-binaries.sh helm >/dev/null
bin-kueue: | bin-helm
	@$(TIMED) go-kueue bash hack/build-binaries.sh kueue >/dev/null
bin-kubelet: | bin-kueue
	@$(TIMED) go-kubelet bash hack/build-binaries.sh kubelet >/dev/null
binaries: bin-control-plane bin-helm bin-kueue bin-kubelet

lint: venv
	@$(TIMED) lint bash -c '$(BIN)/ruff check . && $(BIN)/ruff format --check . && \
	  $(BIN)/hadolint images/operator/Dockerfile images/worker/Dockerfile'

# mypy's cache outside the checkout: a fresh clone checks only what changed (mypy compares file
# hashes when modification times differ).
typecheck: venv
	@$(TIMED) typecheck $(BIN)/mypy --cache-dir "$${XDG_CACHE_HOME:-$$HOME/.cache}/sustaindiffusion/mypy"

imports: venv
	@$(TIMED) imports $(BIN)/lint-imports

# What each suite needs before it starts.
suite-unit suite-worker suite-local suite-resume: venv
suite-chaos suite-runs suite-operator: venv bin-control-plane
suite-observability: venv bin-control-plane system-deps
suite-audit: venv system-deps
suite-kueue: venv bin-control-plane bin-kueue
suite-multikueue: venv bin-control-plane bin-helm bin-kueue
suite-containers: venv binaries system-deps images-layout
suite-e2e: venv binaries system-deps

# Each suite runs in its own slot (tests/support/slots.py): its position in SUITES, from 1 (0 is a
# lone pytest's).
$(addprefix suite-,$(SUITES)): suite-%:
	@slot=1; for suite in $(SUITES); do [ "$$suite" = "$*" ] && break; slot=$$((slot + 1)); done; \
	  SUSTAINDIFFUSION_TEST_SLOT=$$slot SUSTAINDIFFUSION_K8S_BIN_DIR="$(BIN_DIR)" \
	  $(TIMED) $* $(BIN)/pytest -p no:cacheprovider --durations=5 $(SUITE_$*) $(PYTEST_ARGS)

# All the tests in one pytest process (for a subset: PYTEST_ARGS="tests/unit -k engine").
pytest: venv binaries system-deps images-layout
	SUSTAINDIFFUSION_K8S_BIN_DIR="$(BIN_DIR)" $(BIN)/pytest $(PYTEST_ARGS)
	@bash hack/check-no-leftovers.sh

# The chaos suite in full (20 operator kills, more pods and messages); `make test` runs it bounded.
chaos: venv bin-control-plane system-deps
	SUSTAINDIFFUSION_CHAOS=full SUSTAINDIFFUSION_K8S_BIN_DIR="$(BIN_DIR)" \
	  $(BIN)/pytest -m chaos -s $(PYTEST_ARGS)
	@bash hack/check-no-leftovers.sh

# The MultiKueue suite in full (a longer search, and Kueue's own behaviour with a plain Job: a lost
# worker, pods never ready); `make test` runs it bounded: one search, one generation, one cluster lost.
multikueue: venv bin-control-plane bin-helm bin-kueue
	SUSTAINDIFFUSION_MULTIKUEUE=full SUSTAINDIFFUSION_K8S_BIN_DIR="$(BIN_DIR)" \
	  $(BIN)/pytest -m multikueue -s $(PYTEST_ARGS)
	@bash hack/check-no-leftovers.sh

# The container suite alone, its measurements printed: the images run by a real kubelet.
containers: venv binaries system-deps images-layout
	SUSTAINDIFFUSION_K8S_BIN_DIR="$(BIN_DIR)" $(BIN)/pytest -m containers -s $(PYTEST_ARGS)
	@bash hack/check-no-leftovers.sh

# The end-to-end suites on another supported Kubernetes version (hack/versions.env's
# KUBERNETES_SUPPORTED): `make test-k8s K8S=v1.37.2`. That version's control plane and kubelet are
# built into the same cache as `make test`'s (etcd, Kueue and helm as pinned), then every suite
# that runs a control plane runs against them, one after another in one slot
# ($SUSTAINDIFFUSION_TEST_SLOT, default 0). Its timing table is out/k8s/<version>/timings.tsv, each
# suite's log out/ci/logs/<version>-<suite>.log. `make test` is unchanged by it.
K8S_SUITES := operator observability chaos runs kueue multikueue containers e2e
K8S_OUT = $(CURDIR)/out/k8s/$(K8S)
test-k8s k8s-supported: export SUSTAINDIFFUSION_TIMINGS = $(K8S_OUT)/timings.tsv
test-k8s: k8s-supported venv system-deps images-layout
	@export SUSTAINDIFFUSION_KUBERNETES_VERSION=$(K8S); \
	  for component in control-plane helm kueue kubelet; do \
	    $(TIMED) $(K8S)-go-$$component bash hack/build-binaries.sh $$component >/dev/null || exit 1; done; \
	  status=0; bin_dir=$$(bash hack/build-binaries.sh --print-dir 2>/dev/null | tail -n 1); \
	  $(foreach s,$(K8S_SUITES),SUSTAINDIFFUSION_K8S_BIN_DIR="$$bin_dir" \
	    $(TIMED) $(K8S)-$(s) $(BIN)/pytest -p no:cacheprovider --durations=5 $(SUITE_$(s)) $(PYTEST_ARGS) \
	    || status=1;) \
	  python3 hack/timings.py $(SUSTAINDIFFUSION_TIMINGS) --started "$$(cat $(K8S_OUT)/started)"; \
	  bash hack/check-no-leftovers.sh || status=1; exit $$status

# K8S names a supported version (the build script says which are), before anything is built; the
# run's timing table starts here.
k8s-supported:
	@[ -n "$(K8S)" ] || { echo "usage: make test-k8s K8S=<version>" \
	  "(supported: $$(. hack/versions.env && echo $$KUBERNETES_SUPPORTED))" >&2; exit 2; }
	@SUSTAINDIFFUSION_KUBERNETES_VERSION=$(K8S) bash hack/build-binaries.sh --print-dir >/dev/null
	@mkdir -p $(K8S_OUT); rm -f $(SUSTAINDIFFUSION_TIMINGS); date +%s > $(K8S_OUT)/started

# The timing table of the last `make test`.
timings:
	@python3 hack/timings.py $(SUSTAINDIFFUSION_TIMINGS) --started "$$(cat out/ci/started)"

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

# The images in the build cache only (no archives): what the container suite imports from.
images-layout: system-deps
	@$(TIMED) images bash hack/build-images.sh --layout >/dev/null

constraints: venv
	$(BIN)/pip freeze --exclude-editable | grep -v '^sustaindiffusion' \
	  | sed '1i # Exact versions the tests run with (pip install -c constraints.txt). Regenerate with `make constraints`.' \
	  > constraints.txt

clean:
	rm -f $(VENV)
	rm -rf .mypy_cache .pytest_cache .ruff_cache
