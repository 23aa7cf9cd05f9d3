# Upscaling service — developer and CI entry points.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_FILES := $(wildcard protos/upscaling/v1/*.proto)

.PHONY: venv protos protos-check lint migrate run test fuzz chaos bench compose-test k8s-validate clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Regenerate the Python code of the protos (grpc_tools.protoc, plus .pyi stubs).
protos: $(STAMP)
	rm -f upscaling/v1/*_pb2*.py upscaling/v1/*_pb2*.pyi
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO_FILES)

## Fail when the committed generated code differs from what `make protos` produces.
protos-check: protos
	git diff --exit-code -- upscaling/v1
	test -z "$$(git status --porcelain -- upscaling/v1)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/buf lint

migrate: $(STAMP)
	$(BIN)/python -m upscaling.migrations

## Start every service as local processes (gateway, tiler, local openEO backend); Ctrl-C stops them all.
run: $(STAMP)
	$(BIN)/python -m upscaling.launcher $(RUN_ARGS)

test: $(STAMP)
	scripts/ensure-test-tools.sh
	$(MAKE) --no-print-directory lint protos-check
	$(BIN)/python -m pytest -p no:cacheprovider

## Longer fuzzing than `make test` runs: FUZZ_EXAMPLES random examples per fuzz test (hypothesis profile "fuzz").
FUZZ_EXAMPLES ?= 500
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -p no:cacheprovider tests/fuzz \
		--durations=0 $(FUZZ_ARGS)

## The full chaos run (not part of `make test`, which runs a short seeded one): 2,000 jobs, every service kind
## SIGKILLed twice, RabbitMQ and PostgreSQL (private servers) each stopped 20 s. CHAOS_SEED=N repeats a run.
chaos: $(STAMP)
	CHAOS_PROFILE=full CHAOS_SEED=$(CHAOS_SEED) $(BIN)/python -m pytest -p no:cacheprovider tests/chaos -s $(CHAOS_ARGS)

## Benchmarks (not part of `make test`): each prints its figures against a baseline measured in the same run.
bench: $(STAMP)
	$(BIN)/python bench/bench_tiler.py
	$(BIN)/python bench/bench_local_openeo.py
	$(BIN)/python bench/bench_pipeline.py

## Build the image with podman, bring docker-compose.yml up, run the notebook + gRPC flows, scale, tear down.
compose-test: $(STAMP)
	deploy/compose-test/run.sh

## Render every Kubernetes overlay (kubectl kustomize) and validate it offline; check the compose file.
k8s-validate: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -q tests/test_deploy_manifests.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
