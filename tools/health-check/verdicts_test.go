package main

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	fluxstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

type row struct {
	State   string `json:"state"`
	File    string `json:"file"`
	ArgoCD  string `json:"argocd"`
	Kstatus string `json:"kstatus"`
	Flux    string `json:"flux"`
}

func readVerdicts(t *testing.T) []row {
	t.Helper()
	text, err := os.ReadFile("verdicts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var table struct {
		States []row `json:"states"`
	}
	if err := yaml.UnmarshalStrict(text, &table); err != nil {
		t.Fatalf("verdicts.yaml: %v", err)
	}
	return table.States
}

func TestVerdictsTableTestdataAndHealthTestNameTheSameFiles(t *testing.T) {
	fromTable := map[string]string{}
	for _, r := range readVerdicts(t) {
		fromTable["testdata/"+r.File] = r.ArgoCD
	}
	fromHealthTests := map[string]string{}
	for _, test := range readHealthTests(t).Tests {
		fromHealthTests[test.InputPath] = test.HealthStatus.Status
	}
	entries, err := os.ReadDir(filepath.Join(repo, healthDir, "testdata"))
	if err != nil {
		t.Fatal(err)
	}
	var captured []string
	for _, entry := range entries {
		captured = append(captured, "testdata/"+entry.Name())
	}
	for _, file := range captured {
		if _, ok := fromTable[file]; !ok {
			t.Errorf("%s is not in verdicts.yaml", file)
		}
		if _, ok := fromHealthTests[file]; !ok {
			t.Errorf("%s is not in health_test.yaml", file)
		}
	}
	sort.Strings(captured)
	for file, argocd := range fromTable {
		if i := sort.SearchStrings(captured, file); i == len(captured) || captured[i] != file {
			t.Errorf("%s is missing: capture it with `BEEOS_CAPTURE_TESTDATA=1 cargo test --test health`", file)
		}
		if got := fromHealthTests[file]; got != argocd {
			t.Errorf("%s: health_test.yaml says %q, verdicts.yaml %q", file, got, argocd)
		}
	}
}

func TestEveryCaptureReadsAsTheTableSays(t *testing.T) {
	for _, r := range readVerdicts(t) {
		t.Run(r.State, func(t *testing.T) {
			verdicts, err := judge(repo, readTestdata(t, "testdata/"+r.File))
			if err != nil {
				t.Fatal(err)
			}
			for _, check := range []struct{ tool, got, want string }{
				{"Argo CD (argocd-cm)", verdicts.ArgoCD.Status, r.ArgoCD},
				{"Argo CD (built in)", verdicts.ArgoCDBuiltIn.Status, r.ArgoCD},
				{"kstatus", verdicts.Kstatus.Status, r.Kstatus},
				{"Flux healthCheckExprs", verdicts.Flux.Status, r.Flux},
			} {
				if check.got != check.want {
					t.Errorf("%s says %s, the table %s (%+v)", check.tool, check.got, check.want, verdicts)
				}
			}
		})
	}
}

// Flux's kustomize-controller computes kstatus with its fork, github.com/fluxcd/cli-utils; the
// table holds for Flux only while the fork agrees with sigs.k8s.io/cli-utils.
func TestFluxsKstatusForkAgreesWithUpstream(t *testing.T) {
	for _, r := range readVerdicts(t) {
		obj := readTestdata(t, "testdata/"+r.File)
		upstream, err := kstatusVerdict(clone(obj))
		if err != nil {
			t.Fatal(err)
		}
		fork, err := fluxstatus.Compute(&unstructured.Unstructured{Object: clone(obj)})
		if err != nil {
			t.Fatal(err)
		}
		if fork.Status.String() != upstream.Status {
			t.Errorf("%s: Flux's kstatus says %s, upstream %s", r.File, fork.Status, upstream.Status)
		}
	}
}

// The contract's paused resource: Ready=False (Paused), Reconciling=False, Stalled=True (Paused).
func TestPausedAsTheContractDescribesItIsSuspendedForArgoCDCurrentForFluxAndFailedForKstatus(t *testing.T) {
	obj := readTestdata(t, "testdata/paused.yaml")
	conditions, _, err := unstructured.NestedSlice(obj, "status", "conditions")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conditions {
		condition := c.(map[string]any)
		switch condition["type"] {
		case "Ready", "Synced":
			condition["status"], condition["reason"] = "False", "Paused"
		case "Stalled":
			condition["status"], condition["reason"] = "True", "Paused"
		case "Reconciling":
			condition["status"], condition["reason"] = "False", "NoIssues"
		}
	}
	if err := unstructured.SetNestedSlice(obj, conditions, "status", "conditions"); err != nil {
		t.Fatal(err)
	}
	verdicts, err := judge(repo, obj)
	if err != nil {
		t.Fatal(err)
	}
	if verdicts.ArgoCD.Status != "Suspended" || verdicts.Flux.Status != "Current" {
		t.Errorf("Argo CD says %s, Flux %s: want Suspended and Current", verdicts.ArgoCD.Status, verdicts.Flux.Status)
	}
	// kstatus has no notion of paused: it reads the Stalled condition, a terminal verdict rather
	// than waiting forever.
	if verdicts.Kstatus.Status != "Failed" {
		t.Errorf("kstatus says %s, want Failed", verdicts.Kstatus.Status)
	}
}
