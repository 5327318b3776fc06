package main

import (
	"reflect"
	"testing"
)

func TestPromqlMetricsFindsEverySelectedMetricAndNothingElse(t *testing.T) {
	got, err := promqlMetrics([]string{
		`sum by (namespace) (beeos_operator_resources{state="Stalled", namespace=~"$namespace"}) > 0`,
		`histogram_quantile(0.99, sum by (le) (rate(beeos_operator_reconcile_duration_seconds_bucket[$__rate_interval])))`,
		`sum(rate(a_total{code=~"5.."}[10m])) / on (job) group_left sum(rate({__name__="b_total"}[10m]))`,
		`max by (job) (up offset 5m) < bool 1 unless absent(c)`,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a_total", "b_total", "beeos_operator_reconcile_duration_seconds_bucket", "beeos_operator_resources", "c", "up"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestPromqlMetricsRefusesWhatItCannotName(t *testing.T) {
	for _, expr := range []string{`sum(rate(x[5m]`, `{job="a"}`} {
		if _, err := promqlMetrics([]string{expr}); err == nil {
			t.Errorf("%s: no error", expr)
		}
	}
}

func TestDashboardExprsReadsTargetsAndVariableQueries(t *testing.T) {
	got, err := dashboardExprs([]byte(`{
		"panels": [{"targets": [{"expr": "rate(a_total[5m])"}]},
		           {"type": "row", "panels": [{"targets": [{"expr": "b"}]}]}],
		"templating": {"list": [{"query": {"query": "label_values(c{x=\"y\"}, namespace)"}},
		                        {"query": "label_values(namespace)"}]}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"rate(a_total[5m])": true, "b": true, `c{x="y"}`: true}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for _, expr := range got {
		if !want[expr] {
			t.Errorf("unexpected %q", expr)
		}
	}
}
