{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "profiler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: fullnameOverride, else <release>, or <release>-<chart>. */}}
{{- define "profiler.fullname" -}}
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

{{/* Labels on every resource, with the instance: for resources of no component. */}}
{{- define "profiler.labels" -}}
{{ include "profiler.commonLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every resource; a component adds its selector labels (which hold the instance). */}}
{{- define "profiler.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: {{ include "profiler.name" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of a component: include with (list . "agent"). */}}
{{- define "profiler.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "profiler.name" $root }}-{{ index . 1 }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* image reference of a component's image values: include with (list . .Values.agent.image). */}}
{{- define "profiler.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}

{{- define "profiler.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (printf "%s-agent" (include "profiler.fullname" .)) .Values.agent.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the auth token; empty when there is no token. */}}
{{- define "profiler.authSecretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else if .Values.auth.token }}
{{- printf "%s-auth" (include "profiler.fullname" .) }}
{{- end }}
{{- end }}

{{- define "profiler.authSecretKey" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecretKey }}
{{- else }}
{{- print "token" }}
{{- end }}
{{- end }}

{{/* The PROFILER_AUTH_TOKEN env entry (both components), when a token is configured. */}}
{{- define "profiler.authEnv" -}}
{{- with (include "profiler.authSecretName" .) -}}
- name: PROFILER_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ include "profiler.authSecretKey" $ }}
{{- end }}
{{- end }}

{{/* Where the agent sends profiles. */}}
{{- define "profiler.serverUrl" -}}
{{- if .Values.agent.serverUrl }}
{{- .Values.agent.serverUrl }}
{{- else }}
{{- printf "http://%s-server.%s.svc:%d" (include "profiler.fullname" .) .Release.Namespace (int .Values.server.service.httpPort) }}
{{- end }}
{{- end }}

{{/* The least-privilege capability set (deploy/README.md says what each is for). */}}
{{- define "profiler.agent.capabilities" -}}
- BPF
- PERFMON
- SYS_PTRACE
- DAC_READ_SEARCH
- CHECKPOINT_RESTORE
- SYSLOG
{{- range .Values.agent.extraCapabilities }}
- {{ . }}
{{- end }}
{{- end }}
