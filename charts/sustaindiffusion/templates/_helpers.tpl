{{- define "sustaindiffusion.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sustaindiffusion.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sustaindiffusion.labels" -}}
app.kubernetes.io/name: {{ include "sustaindiffusion.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sustaindiffusion.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sustaindiffusion.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "sustaindiffusion.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sustaindiffusion.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sustaindiffusion.watchNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- join "," .Values.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The operator's permissions: exactly what it uses, nothing more. */}}
{{- define "sustaindiffusion.rules" -}}
- apiGroups: ["sustaindiffusion.io"]
  resources: ["sustainsearches"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["sustaindiffusion.io"]
  resources: ["sustainsearches/status"]
  verbs: ["get", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete", "deletecollection"]
- apiGroups: [""]
  resources: ["pods"]
  {{- if .Values.multicluster.workerClustersSecret }}
  # patch: to release the results finalizer of portable worker pods (MultiKueue)
  verbs: ["get", "list", "watch", "patch"]
  {{- else }}
  verbs: ["get", "list", "watch"]
  {{- end }}
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "create", "patch", "delete", "deletecollection"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Kueue's Workloads, read only, for why a queued generation waits (harmless where Kueue is absent).
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list"]
{{- end -}}
