{{/* Names, labels and images shared by the templates. */}}

{{/* The CSI driver name: fixed, because PVs and kubelet's plugin directory carry it. */}}
{{- define "rds-csi.driverName" -}}
rds.csi.srvlab.io
{{- end }}

{{- define "rds-csi.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else if contains "rds-csi" .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-rds-csi" .Release.Name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "rds-csi.selectorLabels" -}}
app.kubernetes.io/name: rds-csi
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rds-csi.labels" -}}
{{ include "rds-csi.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rds-csi.secretName" -}}
{{- .Values.rds.secret.name | default (printf "%s-credentials" (include "rds-csi.fullname" .)) }}
{{- end }}

{{- define "rds-csi.controllerImage" -}}
{{- printf "%s:%s" .Values.image.controller.repository (.Values.image.controller.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "rds-csi.nodeImage" -}}
{{- printf "%s:%s" .Values.image.node.repository (.Values.image.node.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* kubelet's directory without a trailing slash. */}}
{{- define "rds-csi.kubeletDir" -}}
{{- .Values.kubeletDir | trimSuffix "/" }}
{{- end }}

{{/* The host directory of the node plugin's socket. */}}
{{- define "rds-csi.pluginDir" -}}
{{- printf "%s/plugins/%s" (include "rds-csi.kubeletDir" .) (include "rds-csi.driverName" .) }}
{{- end }}

{{/* The securityContext of every unprivileged container. */}}
{{- define "rds-csi.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* Refuses values the templates cannot turn into a working deployment. */}}
{{- define "rds-csi.validate" -}}
{{- if not (has .Values.rds.tls.mode (list "fingerprint" "ca" "system" "insecure")) }}
{{- fail (printf "rds.tls.mode %q: expected fingerprint, ca, system or insecure" .Values.rds.tls.mode) }}
{{- end }}
{{- if not (has .Values.node.mode (list "pod" "host")) }}
{{- fail (printf "node.mode %q: expected pod or host" .Values.node.mode) }}
{{- end }}
{{- end }}
