{{/* The chart's name, or nameOverride. */}}
{{- define "beeos-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of the release's objects: fullnameOverride, or the release name with the chart's name. */}}
{{- define "beeos-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "beeos-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "beeos-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "beeos-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "beeos-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: beeos-operator
{{- end }}

{{- define "beeos-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "beeos-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "beeos-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret holding the default BeeOS token, or nothing when there are no default credentials. */}}
{{- define "beeos-operator.tokenSecretName" -}}
{{- if and .Values.beeos.existingSecret .Values.beeos.token }}
{{- fail "beeos.existingSecret and beeos.token are both set: keep existingSecret (beeos.token is for demos)" }}
{{- end }}
{{- if .Values.beeos.existingSecret }}
{{- .Values.beeos.existingSecret }}
{{- else if .Values.beeos.token }}
{{- printf "%s-token" (include "beeos-operator.fullname" .) }}
{{- end }}
{{- end }}

{{- define "beeos-operator.tokenSecretKey" -}}
{{- if .Values.beeos.existingSecret }}
{{- .Values.beeos.existingSecretKey }}
{{- else }}
{{- "token" }}
{{- end }}
{{- end }}

{{/*
Everything the operator does in Kubernetes, and nothing more. It never creates or deletes a
BeeosInstance, and reads Secrets only by name (a resource's spec.credentials and injected keys).
*/}}
{{- define "beeos-operator.rules" -}}
# Reconciles read the watch cache; a get re-reads a resource whose guarded write failed. The
# finalizer and annotations are merge and JSON patches.
- apiGroups: ["beeos.ai"]
  resources: ["beeosinstances"]
  verbs: ["get", "list", "watch", "patch"]
# Status is written with server-side apply.
- apiGroups: ["beeos.ai"]
  resources: ["beeosinstances/status"]
  verbs: ["patch"]
# Secrets: read by name; their metadata watched (only those labelled beeos.ai/referenced) so a
# rotated value rolls out at once; patched only to add or drop the operator's label and its
# in-use finalizer on credentials Secrets — the ValidatingAdmissionPolicy of this chart denies
# the operator any other change to a Secret.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "patch"]
# The connection ConfigMap a resource may ask for (spec.writeConnectionConfigMapToRef): read to
# see whether it changed or belongs to someone else, applied, and deleted when renamed.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch", "delete"]
# Events are created, one per decision (a repeated failure is announced once, not patched).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
