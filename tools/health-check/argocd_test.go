package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const repo = "../.."

// healthTests is Argo CD's health_test.yaml format.
type healthTests struct {
	Tests []struct {
		InputPath    string       `json:"inputPath"`
		HealthStatus HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

func readHealthTests(t *testing.T) healthTests {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(repo, healthDir, "health_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var tests healthTests
	if err := yaml.UnmarshalStrict(text, &tests); err != nil {
		t.Fatalf("health_test.yaml: %v", err)
	}
	if len(tests.Tests) == 0 {
		t.Fatal("health_test.yaml has no tests")
	}
	return tests
}

func readScript(t *testing.T) string {
	t.Helper()
	script, err := os.ReadFile(filepath.Join(repo, healthScriptPath))
	if err != nil {
		t.Fatal(err)
	}
	return string(script)
}

func readTestdata(t *testing.T, inputPath string) map[string]any {
	t.Helper()
	file, err := os.Open(filepath.Join(repo, healthDir, inputPath))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	obj, err := readObject(file)
	if err != nil {
		t.Fatalf("%s: %v", inputPath, err)
	}
	return obj
}

// As Argo CD's own TestLuaHealthScript runs every resource_customizations case, in both ways
// Argo CD runs a script: built in (every standard library) and from argocd-cm (no open
// libraries, the default for a customization).
func TestEveryCaseOfHealthTestYAMLGivesItsHealthStatus(t *testing.T) {
	script := readScript(t)
	for _, test := range readHealthTests(t).Tests {
		for mode, openLibs := range map[string]bool{"built-in": true, "argocd-cm": false} {
			t.Run(mode+"/"+test.InputPath, func(t *testing.T) {
				got, err := argoHealth(readTestdata(t, test.InputPath), script, openLibs)
				if err != nil {
					t.Fatal(err)
				}
				if got != test.HealthStatus {
					t.Errorf("got %+v, want %+v", got, test.HealthStatus)
				}
			})
		}
	}
}

func TestReadmeArgocdCmSnippetIsHealthLua(t *testing.T) {
	snippet, err := readmeArgoScript(filepath.Join(repo, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if snippet != readScript(t) {
		t.Errorf("the README's %s differs from %s:\n%s", argocdKey, healthScriptPath, snippet)
	}
}

func TestChartNotesArgocdCmSnippetIsHealthLua(t *testing.T) {
	notes, err := os.ReadFile(filepath.Join(repo, "charts/beeos-operator/templates/NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	snippet, err := literalBlockAfter(string(notes), argocdKey)
	if err != nil {
		t.Fatalf("NOTES.txt: %v", err)
	}
	if strings.Contains(snippet, "{{") {
		t.Fatal("the script in NOTES.txt holds template actions")
	}
	if snippet != readScript(t) {
		t.Errorf("NOTES.txt's %s differs from %s:\n%s", argocdKey, healthScriptPath, snippet)
	}
}

// The harness must fail the way Argo CD fails, or a broken script could pass here.
func TestHarnessRejectsWhatArgoCDRejects(t *testing.T) {
	obj := map[string]any{"metadata": map[string]any{"name": "x"}}
	got, err := argoHealth(obj, `return {status = "Fine"}`, false)
	if err != nil || got.Status != "Unknown" {
		t.Errorf("an unknown status: got %+v, %v; want Unknown", got, err)
	}
	if _, err := argoHealth(obj, `while true do end`, false); err == nil {
		t.Error("a script that never returns was not stopped")
	}
	if _, err := argoHealth(obj, `return string.format("%s", "x")`, false); err == nil {
		t.Error("the string library is open to an argocd-cm script")
	}
	if _, err := argoHealth(obj, `return "Healthy"`, true); err == nil {
		t.Error("a script returning a string was accepted")
	}
}
