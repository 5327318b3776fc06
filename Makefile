# The one entry point for people and CI. `make test` is what CI runs.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# CI builds exactly what Cargo.lock pins.
CARGO_FLAGS := $(if $(CI),--locked,)

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: test
test: lint unit integration conformance ## Everything CI checks: lint, unit, integration, SDK conformance

.PHONY: lint
lint: ## cargo fmt --check and clippy with warnings denied
	$(CARGO) fmt --all --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

.PHONY: unit
unit: ## Unit tests (no servers)
	$(CARGO) test $(CARGO_FLAGS) --workspace --lib --bins

.PHONY: integration
integration: testbins ## Integration tests against a real kube-apiserver + etcd
	$(CARGO) test $(CARGO_FLAGS) --workspace --test '*'

.PHONY: testbins
testbins: ## Build kube-apiserver and etcd from the pinned Go modules (cached)
	tools/k8s-testbins/build.sh

.PHONY: conformance
conformance: ## BeeOS's official Python SDK against the simulator (pinned venv in .tools/)
	tools/beeos-sim/conformance/run.sh

.PHONY: crds
crds: ## Regenerate the CRD in crds/ from the Rust types
	$(CARGO) run $(CARGO_FLAGS) --quiet --bin beeos-operator -- crd > crds/beeos.ai_beeosinstances.yaml

.PHONY: bench
bench: testbins ## Benchmarks: control-plane start time, simulator throughput
	$(CARGO) run $(CARGO_FLAGS) --quiet -p testenv --bin testenv -- start-time 5
	$(CARGO) run $(CARGO_FLAGS) --quiet --release -p beeos-sim --example bench
