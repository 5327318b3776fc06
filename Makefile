# The one entry point for people and CI. `make test` is what CI runs.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Tests and the demo use the kubectl built with the test control plane, at its version.
export PATH := $(CURDIR)/tools/k8s-testbins/bin:$(PATH)
# CI builds exactly what Cargo.lock pins.
CARGO_FLAGS := $(if $(CI),--locked,)

# Helm, pinned and built from the Go module proxy into .tools/bin (`make helm`). The chart tests
# run this binary (found through HELM), never one from PATH.
HELM_VERSION := v3.22.0
TOOLS_BIN := $(CURDIR)/.tools/bin
export HELM := $(TOOLS_BIN)/helm

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: test
test: lint unit integration conformance demo-check ## Everything CI checks: lint, unit, integration, SDK conformance, demo

.PHONY: lint
lint: ## cargo fmt --check and clippy with warnings denied
	$(CARGO) fmt --all --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

.PHONY: unit
unit: ## Unit tests (no servers)
	$(CARGO) test $(CARGO_FLAGS) --workspace --lib --bins

.PHONY: integration
integration: testbins helm node-prep ## Integration tests: the real control plane, the image, and the real node where it can run
	IMAGE_PROFILE=dev tools/image/build.sh
	$(CARGO) test $(CARGO_FLAGS) --workspace --test '*' --no-fail-fast

.PHONY: testbins
testbins: ## Build kube-apiserver, kube-controller-manager, etcd and kubectl (cached)
	tools/k8s-testbins/build.sh

.PHONY: nodebins
nodebins: testbins ## Build kubelet, kube-proxy, kube-scheduler (cached) and the node's pause image
	tools/k8s-testbins/build.sh node
	tools/node/build.sh

.PHONY: node-deps
node-deps: ## Install the Debian packages a node needs when missing (as root)
	tools/node/install.sh

# What the node tests need, when this machine can run a node. Where it cannot (not root, no
# overlay filesystem), CI stops here naming what is missing; elsewhere the node tests skip loudly.
.PHONY: node-prep
node-prep:
	@if [ "$$(id -u)" = 0 ] && grep -qw overlay /proc/filesystems; then \
	  tools/node/install.sh && $(MAKE) --no-print-directory nodebins; \
	elif [ -n "$(CI)" ]; then \
	  echo "node: this machine cannot run a node: $$( [ "$$(id -u)" = 0 ] || echo 'not root; ')$$(grep -qw overlay /proc/filesystems || echo 'no overlay filesystem')" >&2; exit 1; \
	else \
	  echo "node: SKIPPING the node tests: this machine cannot run a node (needs root and overlay)" >&2; \
	fi

.PHONY: image
image: ## Build the operator image as an OCI archive in target/image, without a container engine
	tools/image/build.sh

.PHONY: node
node: nodebins node-deps image ## A real single-node cluster with the operator image and the simulator, until Ctrl-D or Ctrl-C
	$(CARGO) build $(CARGO_FLAGS) --quiet -p beeos-sim --bin beeos-sim
	tools/node/node.sh up --image target/image/beeos-operator.tar --sim target/debug/beeos-sim \
	  --sim-arg --token --sim-arg oag_00000000000000000000000000000000000000000000000000000000000000a1=team-a

.PHONY: node-test
node-test: testbins helm node-prep ## The operator's image, chart and leader election on the real node (tests/node.rs)
	IMAGE_PROFILE=dev tools/image/build.sh
	$(CARGO) test $(CARGO_FLAGS) --test node -- --nocapture

.PHONY: conformance
conformance: ## BeeOS's official Python SDK against the simulator (pinned venv in .tools/)
	tools/beeos-sim/conformance/run.sh

.PHONY: crds
crds: ## Regenerate the CRD in crds/ from the Rust types
	$(CARGO) run $(CARGO_FLAGS) --quiet --bin beeos-operator -- crd > crds/beeos.ai_beeosinstances.yaml
	@$(MAKE) --no-print-directory chart-crds

.PHONY: chart-crds
chart-crds: ## Copy crds/ into the Helm chart (a test fails when the copy drifts)
	rm -f charts/beeos-operator/crds/*.yaml
	cp crds/*.yaml charts/beeos-operator/crds/

# Like Helm's own Makefile, the build stamps Helm's version, and the Kubernetes version of its
# client-go as the default for `helm template` and for lint's deprecation checks.
.PHONY: helm
helm: ## Build the pinned Helm into .tools/bin (once per version)
	@stamp=$(TOOLS_BIN)/.helm.stamp; \
	if [ -x $(HELM) ] && [ "$$(cat $$stamp 2>/dev/null)" = $(HELM_VERSION) ]; then \
	  echo "helm: $(HELM_VERSION) is current"; exit 0; fi; \
	echo "helm: building $(HELM_VERSION) from the Go module proxy (cold: a few minutes)"; \
	mkdir -p $(TOOLS_BIN); rm -f $$stamp; \
	export GOTOOLCHAIN=local CGO_ENABLED=0; \
	mod=helm.sh/helm/v3; \
	gomod=$$(go mod download -json $$mod@$(HELM_VERSION) | sed -n 's/^\t"GoMod": "\(.*\)",$$/\1/p'); \
	kube_minor=$$(sed -n 's/^\tk8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$$gomod"); \
	[ -n "$$kube_minor" ] || { echo "helm: no k8s.io/client-go version in $$gomod" >&2; exit 1; }; \
	GOBIN=$(TOOLS_BIN) go install -trimpath -ldflags "-s -w \
	  -X $$mod/internal/version.version=$(HELM_VERSION) \
	  -X $$mod/pkg/chartutil.k8sVersionMajor=1 -X $$mod/pkg/chartutil.k8sVersionMinor=$$kube_minor \
	  -X $$mod/pkg/lint/rules.k8sVersionMajor=1 -X $$mod/pkg/lint/rules.k8sVersionMinor=$$kube_minor" \
	  $$mod/cmd/helm@$(HELM_VERSION); \
	echo $(HELM_VERSION) > $$stamp

.PHONY: bench
bench: testbins ## Benchmarks (medians): control plane start, simulator throughput, operator end to end
	$(CARGO) run $(CARGO_FLAGS) --quiet -p testenv --bin testenv -- start-time 5
	$(CARGO) run $(CARGO_FLAGS) --quiet --release -p beeos-sim --example bench
	$(CARGO) bench $(CARGO_FLAGS) --profile dev --bench operator

.PHONY: demo
demo: ## Control plane + simulator + operator + examples on this machine, until Ctrl-C
	tools/demo.sh

.PHONY: demo-check
demo-check: ## The demo, non-interactively: exits 0 once every example is Ready
	tools/demo.sh --check
