package main

import (
	"context"
	"fmt"

	"github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// Verdict is one tool's reading of an object: a status and why.
type Verdict struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// kstatusVerdict is what kstatus computes for the object: the library behind Flux's default
// health checks and cli-utils tooling such as kpt.
func kstatusVerdict(obj map[string]any) (Verdict, error) {
	result, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		return Verdict{}, err
	}
	return Verdict{Status: result.Status.String(), Message: result.Message}, nil
}

// fluxVerdict is what Flux's kustomize-controller computes for the object with the given
// healthCheckExprs entry, through the status reader it builds from them: the generation check
// first, then inProgress, failed and current, else InProgress; an expression that fails to
// evaluate (e.g. it reads a status the object does not have yet) gives Unknown, which Flux
// keeps waiting on.
func fluxVerdict(obj map[string]any, exprs kustomize.HealthCheckExpressions) (Verdict, error) {
	newReader, err := fluxcel.NewStatusReader([]kustomize.CustomHealthCheck{{
		APIVersion:             "beeos.ai/v1alpha1",
		Kind:                   "BeeosInstance",
		HealthCheckExpressions: exprs,
	}})
	if err != nil {
		return Verdict{}, fmt.Errorf("the healthCheckExprs do not compile: %w", err)
	}
	// Reading a given object needs neither a REST mapper nor a cluster.
	result, err := newReader(nil).ReadStatusForObject(context.Background(), nil, &unstructured.Unstructured{Object: obj})
	if err != nil {
		return Verdict{}, err
	}
	verdict := Verdict{Status: result.Status.String(), Message: result.Message}
	if result.Error != nil {
		verdict.Message = result.Error.Error()
	}
	return verdict, nil
}
