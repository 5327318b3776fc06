// health-check: what Argo CD, kstatus (Flux's default health check, kpt) and Flux's
// healthCheckExprs make of a BeeosInstance, and which metrics PromQL queries select, judged by
// those projects' own libraries at pinned versions. The operator's tests run it; nothing here is
// shipped.
//
//	health-check verdict --repo DIR < object.json          every tool's verdict, as JSON
//	health-check normalise --namespace NS < object.json    the object as a stable capture (YAML)
//	health-check promql-metrics [--rules FILE] [--dashboard FILE]
//	                                                       every metric name the queries select
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: health-check verdict|normalise|promql-metrics [flags]"))
	}
	var err error
	switch command, args := os.Args[1], os.Args[2:]; command {
	case "verdict":
		err = runVerdict(args)
	case "normalise":
		err = runNormalise(args)
	case "promql-metrics":
		err = runPromqlMetrics(args)
	default:
		err = fmt.Errorf("unknown command %q", command)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "health-check:", err)
	os.Exit(1)
}

// Verdicts is what `verdict` prints.
type Verdicts struct {
	// ArgoCD as configured through argocd-cm (no open libraries).
	ArgoCD HealthStatus `json:"argocd"`
	// ArgoCDBuiltIn as a built-in script of Argo CD (every standard library).
	ArgoCDBuiltIn HealthStatus `json:"argocdBuiltIn"`
	Kstatus       Verdict      `json:"kstatus"`
	Flux          Verdict      `json:"flux"`
}

func runVerdict(args []string) error {
	flags := flag.NewFlagSet("verdict", flag.ContinueOnError)
	repo := flags.String("repo", ".", "the beeos-operator repository (health.lua and README.md)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	obj, err := readObject(os.Stdin)
	if err != nil {
		return err
	}
	verdicts, err := judge(*repo, obj)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(verdicts)
}

// judge gives the verdicts of every tool on obj, with the script and expressions in repo.
func judge(repo string, obj map[string]any) (Verdicts, error) {
	script, err := os.ReadFile(filepath.Join(repo, healthScriptPath))
	if err != nil {
		return Verdicts{}, err
	}
	exprs, err := readmeHealthCheckExprs(filepath.Join(repo, "README.md"))
	if err != nil {
		return Verdicts{}, err
	}
	var verdicts Verdicts
	// Each library gets its own copy, so that none sees what another may have changed.
	if verdicts.ArgoCD, err = argoHealth(clone(obj), string(script), false); err != nil {
		return Verdicts{}, fmt.Errorf("Argo CD (argocd-cm): %w", err)
	}
	if verdicts.ArgoCDBuiltIn, err = argoHealth(clone(obj), string(script), true); err != nil {
		return Verdicts{}, fmt.Errorf("Argo CD (built in): %w", err)
	}
	if verdicts.Kstatus, err = kstatusVerdict(clone(obj)); err != nil {
		return Verdicts{}, fmt.Errorf("kstatus: %w", err)
	}
	if verdicts.Flux, err = fluxVerdict(clone(obj), exprs); err != nil {
		return Verdicts{}, fmt.Errorf("Flux healthCheckExprs: %w", err)
	}
	return verdicts, nil
}

func runNormalise(args []string) error {
	flags := flag.NewFlagSet("normalise", flag.ContinueOnError)
	namespace := flags.String("namespace", "", "the namespace the object was captured in")
	if err := flags.Parse(args); err != nil {
		return err
	}
	obj, err := readObject(os.Stdin)
	if err != nil {
		return err
	}
	normalised, err := normalise(obj, *namespace)
	if err != nil {
		return err
	}
	out, err := yaml.Marshal(normalised)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}

func runPromqlMetrics(args []string) error {
	flags := flag.NewFlagSet("promql-metrics", flag.ContinueOnError)
	rules := flags.String("rules", "", "a Prometheus rule file")
	dashboard := flags.String("dashboard", "", "a Grafana dashboard (JSON)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	var exprs []string
	for _, source := range []struct {
		path    string
		extract func([]byte) ([]string, error)
	}{{*rules, ruleExprs}, {*dashboard, dashboardExprs}} {
		if source.path == "" {
			continue
		}
		text, err := os.ReadFile(source.path)
		if err != nil {
			return err
		}
		found, err := source.extract(text)
		if err != nil {
			return fmt.Errorf("%s: %w", source.path, err)
		}
		if len(found) == 0 {
			return fmt.Errorf("%s has no PromQL expression", source.path)
		}
		exprs = append(exprs, found...)
	}
	names, err := promqlMetrics(exprs)
	if err != nil {
		return err
	}
	fmt.Println(strings.Join(names, "\n"))
	return nil
}

// readObject reads one Kubernetes object, JSON or YAML.
func readObject(r io.Reader) (map[string]any, error) {
	text, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	// As the API machinery decodes objects: whole numbers become int64, which kstatus needs.
	text, err = yaml.YAMLToJSON(text)
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	if err := utiljson.Unmarshal(text, &obj); err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, fmt.Errorf("no object on the input")
	}
	return obj, nil
}

func clone(obj map[string]any) map[string]any {
	text, err := json.Marshal(obj)
	if err != nil {
		panic(err)
	}
	var copied map[string]any
	if err := utiljson.Unmarshal(text, &copied); err != nil {
		panic(err)
	}
	return copied
}
