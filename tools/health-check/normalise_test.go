package main

import (
	"reflect"
	"testing"
)

func TestNormaliseKeepsWhatDecidesHealthAndFixesWhatChangesEveryRun(t *testing.T) {
	live := map[string]any{
		"metadata": map[string]any{
			"name": "agent", "namespace": "health-1234-7", "uid": "6c1f", "resourceVersion": "991",
			"generation": int64(2), "deletionTimestamp": "2026-11-30T10:11:12Z",
			"managedFields": []any{map[string]any{"manager": "beeos-operator"}},
			"annotations":   map[string]any{"beeos.ai/instance-id": "inst_9f3a55aa00112233"},
		},
		"status": map[string]any{
			"observedGeneration": int64(2),
			"instance": map[string]any{
				"id": "inst_9f3a55aa00112233", "endpoint": "https://rt-9f3a55aa00112233.sim.invalid",
				"createdAt": "2026-11-30T10:00:00.123Z",
			},
			"replacement": map[string]any{"id": "inst_0123456789abcdef"},
			"conditions": []any{map[string]any{
				"type": "Stalled", "lastTransitionTime": "2026-11-30T10:11:13Z",
				"message": "credentials Secret health-1234-7/token not found [request_id req_00aa11bb22cc33dd]",
			}},
		},
	}
	got, err := normalise(live, "health-1234-7")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"metadata": map[string]any{
			"name": "agent", "namespace": "agents",
			"generation": float64(2), "deletionTimestamp": fixedTime,
			"annotations": map[string]any{"beeos.ai/instance-id": "inst_0000000000000001"},
		},
		"status": map[string]any{
			"observedGeneration": float64(2),
			"instance": map[string]any{
				"id": "inst_0000000000000001", "endpoint": "https://rt-0000000000000001.sim.invalid",
				"createdAt": fixedTime,
			},
			"replacement": map[string]any{"id": "inst_0000000000000002"},
			"conditions": []any{map[string]any{
				"type": "Stalled", "lastTransitionTime": fixedTime,
				"message": "credentials Secret agents/token not found [request_id req_0000000000000000]",
			}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}
