{{/*
Name of the chart, overridable with nameOverride.
*/}}
{{- define "kube-dvr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified release name (at most 63 characters; a release name that
already contains the chart name is used as is). Every object name starts
with it; suffixes stay short so they fit in 63 characters too.
*/}}
{{- define "kube-dvr.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Value of the helm.sh/chart label.
*/}}
{{- define "kube-dvr.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object. Call with (dict "ctx" $ "component" "controller").
*/}}
{{- define "kube-dvr.labels" -}}
helm.sh/chart: {{ include "kube-dvr.chart" .ctx }}
{{ include "kube-dvr.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: kube-dvr
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: stable across upgrades (a Deployment's or DaemonSet's
selector is immutable). Call with (dict "ctx" $ "component" "agent").
*/}}
{{- define "kube-dvr.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-dvr.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The container image: repository@digest when a digest is set, else
repository:tag with the tag defaulting to the chart's appVersion.
*/}}
{{- define "kube-dvr.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
ServiceAccount names. Call with (dict "ctx" $ "component" "controller").
*/}}
{{- define "kube-dvr.serviceAccountName" -}}
{{- $sa := (index .ctx.Values .component).serviceAccount }}
{{- if $sa.create }}
{{- default (printf "%s-%s" (include "kube-dvr.fullname" .ctx) .component) $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{/*
Environment shared by every kube-dvr container.
*/}}
{{- define "kube-dvr.commonEnv" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- end }}

{{/*
The kube-dvr kinds' resources (plural names), one list for every RBAC rule
that names them; `tests/chart.rs` checks it against the kinds registry
(src/api/kinds.rs). Call with a suffix: (include "kube-dvr.resources" "")
or (include "kube-dvr.resources" "/status"); renders a flow list.
*/}}
{{- define "kube-dvr.resources" -}}
{{- $suffix := . -}}
{{- $out := list -}}
{{- range list "externalnetworks" "distributedrouters" "floatingips" "snatgateways" "routerfirewalls" "portforwardings" "loadbalancers" -}}
{{- $out = append $out (printf "%s%s" . $suffix | quote) -}}
{{- end -}}
[{{ join ", " $out }}]
{{- end }}
