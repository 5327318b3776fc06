package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/fluxcd/pkg/apis/kustomize"
	"sigs.k8s.io/yaml"
)

// Where the health script lives, in Argo CD's layout (relative to the repository).
const (
	healthDir        = "argocd/resource_customizations/beeos.ai/BeeosInstance"
	healthScriptPath = healthDir + "/health.lua"
	// The argocd-cm key of the script.
	argocdKey = "resource.customizations.health.beeos.ai_BeeosInstance"
)

// fencedBlocks returns the contents of every ```yaml block of a Markdown file.
func fencedBlocks(markdown string) []string {
	var blocks []string
	var current *strings.Builder
	scanner := bufio.NewScanner(strings.NewReader(markdown))
	for scanner.Scan() {
		line := scanner.Text()
		switch {
		case current == nil && strings.TrimSpace(line) == "```yaml":
			current = &strings.Builder{}
		case current != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, current.String())
			current = nil
		case current != nil:
			current.WriteString(line + "\n")
		}
	}
	return blocks
}

// readmeBlock returns the one ```yaml block of the README that contains marker.
func readmeBlock(readme, marker string) (string, error) {
	text, err := os.ReadFile(readme)
	if err != nil {
		return "", err
	}
	var found []string
	for _, block := range fencedBlocks(string(text)) {
		if strings.Contains(block, marker) {
			found = append(found, block)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("%s has %d yaml blocks with %q, want 1", readme, len(found), marker)
	}
	return found[0], nil
}

// readmeHealthCheckExprs returns the README's healthCheckExprs entry for BeeosInstance (from
// its Flux Kustomization example).
func readmeHealthCheckExprs(readme string) (kustomize.HealthCheckExpressions, error) {
	block, err := readmeBlock(readme, "healthCheckExprs:")
	if err != nil {
		return kustomize.HealthCheckExpressions{}, err
	}
	var kustomization struct {
		Spec struct {
			HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(block), &kustomization); err != nil {
		return kustomize.HealthCheckExpressions{}, fmt.Errorf("the README's Kustomization: %w", err)
	}
	for _, check := range kustomization.Spec.HealthCheckExprs {
		if check.APIVersion == "beeos.ai/v1alpha1" && check.Kind == "BeeosInstance" {
			return check.HealthCheckExpressions, nil
		}
	}
	return kustomize.HealthCheckExpressions{}, fmt.Errorf("the README's healthCheckExprs have no entry for beeos.ai/v1alpha1 BeeosInstance")
}

// readmeArgoScript returns the health script of the README's argocd-cm example.
func readmeArgoScript(readme string) (string, error) {
	block, err := readmeBlock(readme, argocdKey)
	if err != nil {
		return "", err
	}
	var configMap struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal([]byte(block), &configMap); err != nil {
		return "", fmt.Errorf("the README's argocd-cm: %w", err)
	}
	return configMap.Data[argocdKey], nil
}

// literalBlockAfter returns the YAML literal block (`key: |`) that follows key in text, with its
// indentation removed, for YAML embedded in other text (such as the chart's NOTES.txt).
func literalBlockAfter(text, key string) (string, error) {
	lines := strings.Split(text, "\n")
	start := -1
	for i, line := range lines {
		if strings.TrimSpace(line) == key+": |" {
			start = i
			break
		}
	}
	if start < 0 {
		return "", fmt.Errorf("no %q line", key+": |")
	}
	keyIndent := indentation(lines[start])
	blockIndent := -1
	var block []string
	for _, line := range lines[start+1:] {
		if strings.TrimSpace(line) == "" {
			block = append(block, "")
			continue
		}
		if indentation(line) <= keyIndent {
			break
		}
		if blockIndent < 0 {
			blockIndent = indentation(line)
		}
		if indentation(line) < blockIndent {
			return "", fmt.Errorf("line %q is indented less than the block it is in", line)
		}
		block = append(block, line[blockIndent:])
	}
	for len(block) > 0 && block[len(block)-1] == "" {
		block = block[:len(block)-1]
	}
	return strings.Join(block, "\n") + "\n", nil
}

func indentation(line string) int {
	return len(line) - len(strings.TrimLeft(line, " "))
}
