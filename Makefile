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
# promtool of Prometheus 3.16.0 (its Go module is versioned v0.316.0), built the same way; the
# tests check and unit-test the chart's alerting rules with it (found through PROMTOOL).
PROMETHEUS_MODULE_VERSION := v0.316.0
export PROMTOOL := $(TOOLS_BIN)/promtool
# tools/health-check: Argo CD's Lua runtime, kstatus, Flux's CEL health checks and Prometheus's
# PromQL parser at pinned versions, judging the operator's objects (found through HEALTH_CHECK).
export HEALTH_CHECK := $(TOOLS_BIN)/health-check
GO_ENV := GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: test
test: lint unit health integration conformance demo-check ## Everything CI checks: lint, unit, health, integration, SDK conformance, demo

.PHONY: lint
lint: ## cargo fmt --check and clippy with warnings denied
	$(CARGO) fmt --all --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

.PHONY: unit
unit: ## Unit tests (no servers)
	$(CARGO) test $(CARGO_FLAGS) --workspace --lib --bins

.PHONY: integration
integration: testbins helm promtool health-check node-prep ## Integration tests: the real control plane (etcd, kube-apiserver, kube-controller-manager), the image, and the real node where it can run
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

# Built every time: Go's build cache makes an unchanged build take a second or two, and `make
# health` (go test, same flags) reuses what it compiled.
.PHONY: health-check
health-check: ## Build tools/health-check into .tools/bin
	cd tools/health-check && $(GO_ENV) go build -o $(HEALTH_CHECK) .

.PHONY: health
health: ## Argo CD health script, kstatus and Flux CEL verdicts on the captured objects (go test)
	cd tools/health-check && test -z "$$(gofmt -l .)" || { gofmt -l . >&2; echo "health: run gofmt -w tools/health-check" >&2; exit 1; }
	cd tools/health-check && $(GO_ENV) go vet ./... && $(GO_ENV) go test -count=1 ./...

.PHONY: promtool
promtool: ## Build the pinned promtool into .tools/bin (once per version)
	@stamp=$(TOOLS_BIN)/.promtool.stamp; \
	if [ -x $(PROMTOOL) ] && [ "$$(cat $$stamp 2>/dev/null)" = $(PROMETHEUS_MODULE_VERSION) ]; then \
	  echo "promtool: $(PROMETHEUS_MODULE_VERSION) is current"; exit 0; fi; \
	echo "promtool: building $(PROMETHEUS_MODULE_VERSION) from the Go module proxy (cold: several minutes)"; \
	mkdir -p $(TOOLS_BIN); rm -f $$stamp; \
	export GOTOOLCHAIN=local CGO_ENABLED=0; \
	version=$$(echo $(PROMETHEUS_MODULE_VERSION) | sed -E 's/^v0\.3([0-9]{2})\.([0-9]+)$$/3.\1.\2/; s/^3\.0([0-9])/3.\1/'); \
	GOBIN=$(TOOLS_BIN) go install -trimpath -ldflags "-s -w \
	  -X github.com/prometheus/common/version.Version=$$version \
	  -X github.com/prometheus/common/version.Branch=$(PROMETHEUS_MODULE_VERSION)" \
	  github.com/prometheus/prometheus/cmd/promtool@$(PROMETHEUS_MODULE_VERSION); \
	echo $(PROMETHEUS_MODULE_VERSION) > $$stamp

.PHONY: bench
bench: testbins ## Benchmarks (medians): control plane start, simulator throughput, operator end to end
	$(CARGO) run $(CARGO_FLAGS) --quiet -p testenv --bin testenv -- start-time 5
	$(CARGO) run $(CARGO_FLAGS) --quiet --release -p beeos-sim --example bench
	$(CARGO) bench $(CARGO_FLAGS) --profile dev --bench operator

# `make bench-scale N=1000 RATE=10`: any of N, RATE, STEADY_POLL, WINDOW, PHASES (see benches/scale.rs).
N ?= 10000
RATE ?= 0
STEADY_POLL ?= 60s
WINDOW ?= 180s
PHASES ?= all
.PHONY: bench-scale
bench-scale: testbins ## The operator at N resources (default 10000): calls, writes, CPU, memory, freshness, restart
	$(CARGO) build $(CARGO_FLAGS) --release -p beeos-operator -p beeos-sim --bins
	N=$(N) RATE=$(RATE) STEADY_POLL=$(STEADY_POLL) WINDOW=$(WINDOW) PHASES=$(PHASES) \
	  $(CARGO) bench $(CARGO_FLAGS) --bench scale

.PHONY: demo
demo: ## Control plane + simulator + operator + examples on this machine, until Ctrl-C
	tools/demo.sh

.PHONY: demo-check
demo-check: ## The demo, non-interactively: exits 0 once every example is Ready
	tools/demo.sh --check

# Never implied by KUBECONFIG or anything else: only this target touches a cluster of yours.
.PHONY: demo-on-cluster
demo-on-cluster: ## The demo on kubectl's current context, in a namespace of its own (asks first)
	tools/demo.sh --on-cluster
