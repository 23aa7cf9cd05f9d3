# Upscaling service — developer and CI entry points.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_FILES := $(wildcard protos/upscaling/v1/*.proto)
WEB_STAMP := gateway/web/node_modules/.installed
NODE_EXAMPLE_STAMP := examples/node/node_modules/.installed

.PHONY: venv web node-example protos protos-check api-docs api-docs-check lint migrate run test fuzz bench \
	compose-test k8s-validate dev-certs clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## The map page's front-end libraries (Leaflet) from npm, exactly as package-lock.json pins them.
web: $(WEB_STAMP)

$(WEB_STAMP): gateway/web/package.json gateway/web/package-lock.json
	npm ci --prefix gateway/web --no-audit --no-fund
	touch $@

## The Node.js gRPC client example's packages (@grpc/grpc-js, @grpc/proto-loader).
node-example: $(NODE_EXAMPLE_STAMP)

$(NODE_EXAMPLE_STAMP): examples/node/package.json examples/node/package-lock.json
	npm ci --prefix examples/node --no-audit --no-fund
	touch $@

## Regenerate the Python code of the protos (grpc_tools.protoc, plus .pyi stubs).
protos: $(STAMP)
	rm -f upscaling/v1/*_pb2*.py upscaling/v1/*_pb2*.pyi
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO_FILES)

## Fail when the committed generated code differs from what `make protos` produces.
protos-check: protos
	git diff --exit-code -- upscaling/v1
	test -z "$$(git status --porcelain -- upscaling/v1)"

## Regenerate the API reference of the protos (docs/api/upscaling.md) from their comments.
api-docs: $(STAMP)
	$(BIN)/python scripts/proto_docs.py protos docs/api/upscaling.md

## Fail when docs/api/upscaling.md is not what `make api-docs` writes from the current protos.
api-docs-check: $(STAMP)
	$(BIN)/python scripts/proto_docs.py protos docs/api/upscaling.md --check

lint: $(STAMP) api-docs-check
	$(BIN)/ruff check .
	$(BIN)/buf lint

migrate: $(STAMP)
	$(BIN)/python -m upscaling.migrations

## Start every service as local processes (gateway, tiler, local openEO backend); Ctrl-C stops them all.
run: $(STAMP) $(WEB_STAMP)
	$(BIN)/python -m upscaling.launcher $(RUN_ARGS)

test: $(STAMP)
	scripts/ensure-test-tools.sh
	$(MAKE) --no-print-directory web node-example lint protos-check
	$(BIN)/python -m pytest -p no:cacheprovider

## Longer fuzzing than `make test` runs: FUZZ_EXAMPLES random examples per fuzz test (hypothesis profile "fuzz").
FUZZ_EXAMPLES ?= 500
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -p no:cacheprovider tests/fuzz \
		--durations=0 $(FUZZ_ARGS)

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

## A development CA and gateway/client certificates in ./certs (GATEWAY_TLS_CERT=certs/server.pem,
## GATEWAY_TLS_KEY=certs/server-key.pem; clients trust certs/ca.pem). CERT_HOSTS: more names of the gateway.
dev-certs: $(STAMP)
	$(BIN)/python -m devtools.certs certs $(foreach h,$(CERT_HOSTS),--host $(h))

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache gateway/web/node_modules examples/node/node_modules test-artifacts
