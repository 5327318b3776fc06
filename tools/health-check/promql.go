package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// Grafana's built-in interval variables, and what they stand for when a query is parsed.
var grafanaVariables = strings.NewReplacer(
	"$__rate_interval", "5m",
	"$__interval", "1m",
	"$__range", "1h",
)

// promqlMetrics returns the metric names every expression selects, parsed by Prometheus's own
// PromQL parser. Grafana variables are replaced first: the interval ones by durations, the
// others (e.g. `$namespace` in a label matcher) are only ever label values.
func promqlMetrics(exprs []string) ([]string, error) {
	promql := parser.NewParser(parser.Options{})
	names := map[string]bool{}
	for _, expr := range exprs {
		parsed, err := promql.ParseExpr(grafanaVariables.Replace(expr))
		if err != nil {
			return nil, fmt.Errorf("%q: %w", expr, err)
		}
		var missing error
		parser.Inspect(parsed, func(node parser.Node, _ []parser.Node) error {
			selector, ok := node.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			name := selector.Name
			for _, matcher := range selector.LabelMatchers {
				if matcher.Name == labels.MetricName && matcher.Type == labels.MatchEqual {
					name = matcher.Value
				}
			}
			if name == "" {
				missing = fmt.Errorf("%q selects series without naming a metric", expr)
			}
			names[name] = true
			return nil
		})
		if missing != nil {
			return nil, missing
		}
	}
	sorted := make([]string, 0, len(names))
	for name := range names {
		sorted = append(sorted, name)
	}
	sort.Strings(sorted)
	return sorted, nil
}

// dashboardExprs returns the PromQL of a Grafana dashboard: every target's `expr`, and the
// series selector of every `label_values(selector, label)` variable query.
func dashboardExprs(dashboard []byte) ([]string, error) {
	var doc any
	if err := json.Unmarshal(dashboard, &doc); err != nil {
		return nil, err
	}
	var exprs []string
	var walk func(value any, key string)
	walk = func(value any, key string) {
		switch v := value.(type) {
		case map[string]any:
			for k, item := range v {
				walk(item, k)
			}
		case []any:
			for _, item := range v {
				walk(item, key)
			}
		case string:
			switch {
			case key == "expr":
				exprs = append(exprs, v)
			case key == "query" && strings.HasPrefix(v, "label_values("):
				inner := strings.TrimSuffix(strings.TrimPrefix(v, "label_values("), ")")
				if comma := strings.LastIndex(inner, ","); comma > 0 {
					exprs = append(exprs, inner[:comma])
				}
			}
		}
	}
	walk(doc, "")
	return exprs, nil
}

// ruleExprs returns the expression of every rule of a Prometheus rule file (`groups:`).
func ruleExprs(rules []byte) ([]string, error) {
	var file struct {
		Groups []struct {
			Rules []struct {
				Expr string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(rules, &file); err != nil {
		return nil, err
	}
	var exprs []string
	for _, group := range file.Groups {
		for _, rule := range group.Rules {
			exprs = append(exprs, rule.Expr)
		}
	}
	return exprs, nil
}
