{{/* Names, labels and the pod parts the API, the worker and the migrate Job share. */}}

{{- define "fleetflow-cp.fullname" -}}
{{- default .Chart.Name .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "fleetflow-cp.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fleetflow-cp.labels" -}}
{{ include "fleetflow-cp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fleetflow-cp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fleetflow-cp.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "fleetflow-cp.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* An env var from a {name, key} Secret reference; nothing when the name is empty. */}}
{{- define "fleetflow-cp.secretEnv" -}}
{{- $ref := index . 1 -}}
{{- if $ref.name }}
- name: {{ index . 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name | quote }}
      key: {{ required (printf "%s: a Secret reference needs its key" (index . 0)) $ref.key | quote }}
{{- end }}
{{- end -}}

{{- define "fleetflow-cp.checkTransport" -}}
{{- if and (not .Values.tls.enabled) (not .Values.grpcInsecure) -}}
{{- fail "tls.enabled is false and grpcInsecure is false: `control-plane serve` would refuse to start on 0.0.0.0. Set tls.enabled=true with tls.secretName (a kubernetes.io/tls Secret), or grpcInsecure=true to serve agents in plaintext on purpose" -}}
{{- end -}}
{{- if and .Values.tls.enabled .Values.grpcInsecure -}}
{{- fail "tls.enabled and grpcInsecure are both true: choose one" -}}
{{- end -}}
{{- if and .Values.tls.clientCA.enabled (not .Values.tls.enabled) -}}
{{- fail "tls.clientCA.enabled needs tls.enabled (mutual TLS is TLS)" -}}
{{- end -}}
{{- end -}}

{{/* The environment of every container: the ConfigMap, then each secret by reference. */}}
{{- define "fleetflow-cp.env" -}}
envFrom:
- configMapRef:
    name: {{ include "fleetflow-cp.fullname" . }}
{{- with .Values.extraEnvFrom }}
{{ toYaml . }}
{{- end }}
env:
{{- include "fleetflow-cp.secretEnv" (list "FLEETFLOW_DATABASE_URL" (required "database.urlSecret is required: the Secret holding the database URL" .Values.database.urlSecret)) }}
{{- include "fleetflow-cp.secretEnv" (list "FLEETFLOW_TEMPORAL_ADDRESS" .Values.temporal.addressSecret) }}
{{- include "fleetflow-cp.secretEnv" (list "FLEETFLOW_S3_ACCESS_KEY" .Values.blobStore.s3.accessKeySecret) }}
{{- include "fleetflow-cp.secretEnv" (list "FLEETFLOW_S3_SECRET_KEY" .Values.blobStore.s3.secretKeySecret) }}
{{- include "fleetflow-cp.secretEnv" (list "FLEETFLOW_API_BOOTSTRAP_TOKEN" .Values.bootstrapTokenSecret) }}
{{- include "fleetflow-cp.secretEnv" (list "FLEETFLOW_SECRETS_KEYS" .Values.secretsKeysSecret) }}
{{- include "fleetflow-cp.secretEnv" (list "FLEETFLOW_METRICS_TOKEN" .Values.metricsTokenSecret) }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "fleetflow-cp.podSpecCommon" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
- name: {{ . | quote }}
{{- end }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
