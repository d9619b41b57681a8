{{/*
Names, labels and the checks that span several values. The TOML rendering of `config` is in
_toml.tpl.
*/}}

{{- define "regrelay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "regrelay.fullname" -}}
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

{{- define "regrelay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "regrelay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "regrelay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "regrelay.labels" -}}
helm.sh/chart: {{ include "regrelay.chart" . }}
{{ include "regrelay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "regrelay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "regrelay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "regrelay.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Where secretMounts and dockerConfig land in the container. */}}
{{- define "regrelay.secretsDir" -}}/var/run/secrets/regrelay{{- end }}

{{/* config.pipeline.shutdown_grace_secs, or regrelay's default of 30. */}}
{{- define "regrelay.shutdownGraceSecs" -}}
{{- $pipeline := .Values.config.pipeline | default dict }}
{{- $grace := 30 }}
{{- if hasKey $pipeline "shutdown_grace_secs" }}
{{- if not (kindIs "invalid" $pipeline.shutdown_grace_secs) }}
{{- $grace = $pipeline.shutdown_grace_secs }}
{{- end }}
{{- end }}
{{- int $grace }}
{{- end }}

{{/*
Checks across values that values.schema.json cannot express. Included once, by the
Deployment; each failure names the values to change.
*/}}
{{- define "regrelay.validate" -}}
{{- $grace := include "regrelay.shutdownGraceSecs" . | int }}
{{- $tgps := int .Values.terminationGracePeriodSeconds }}
{{- if le $tgps $grace }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than config.pipeline.shutdown_grace_secs (%d): after the grace period regrelay still nacks unfinished work and flushes acks before it exits, and the kubelet kills it at terminationGracePeriodSeconds; use %d or more" $tgps $grace (add $grace 10)) }}
{{- end }}
{{- if not .Values.config.rules }}
{{- fail "config.rules is empty: regrelay would acknowledge every message as ignored; set at least one rule" }}
{{- end }}
{{- if not .Values.config.registries }}
{{- fail "config.registries is empty: list every registry host regrelay may contact" }}
{{- end }}
{{- $hosts := list }}
{{- range .Values.config.registries }}
{{- if has .host $hosts }}
{{- fail (printf "config.registries: host %q is listed twice" .host) }}
{{- end }}
{{- $hosts = append $hosts .host }}
{{- end }}
{{- range .Values.secretMounts }}
{{- if eq .name "docker" }}
{{- fail "secretMounts: the name \"docker\" is reserved for dockerConfig" }}
{{- end }}
{{- end }}
{{- if .Values.sidecar.registry.enabled }}
{{- if .Values.keda.enabled }}
{{- fail "sidecar.registry.enabled with keda.enabled: each replica would hold its own registry and receive only part of the events; the sidecar pattern runs one pod" }}
{{- end }}
{{- if ne (int .Values.replicaCount) 1 }}
{{- fail (printf "sidecar.registry.enabled needs replicaCount 1 (got %d): each replica would hold its own registry and receive only part of the events" (int .Values.replicaCount)) }}
{{- end }}
{{- if eq (int .Values.sidecar.registry.port) (int .Values.adminPort) }}
{{- fail "sidecar.registry.port and adminPort must differ: both containers share the pod's network namespace" }}
{{- end }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.service.enabled) }}
{{- fail "serviceMonitor.enabled needs service.enabled: the ServiceMonitor selects the metrics Service" }}
{{- end }}
{{- if .Values.keda.enabled }}
{{- if eq .Values.keda.trigger "azure-servicebus" }}
{{- $sb := include "regrelay.kedaServicebus" . | fromJson }}
{{- if not $sb.namespace }}
{{- fail "keda.azureServicebus.namespace is required for the azure-servicebus trigger unless config.source is a Service Bus source" }}
{{- end }}
{{- if eq (not $sb.queueName) (not (and $sb.topicName $sb.subscriptionName)) }}
{{- fail "keda.azureServicebus: set either queueName, or topicName with subscriptionName (they default to config.source's queue, or topic and subscription, when it is a Service Bus source)" }}
{{- end }}
{{- else if eq .Values.keda.trigger "gcp-pubsub" }}
{{- if and (not .Values.keda.gcpPubsub.subscriptionName) (ne (.Values.config.source.kind | toString) "pubsub") }}
{{- fail "keda.gcpPubsub.subscriptionName is required when config.source is not a Pub/Sub subscription" }}
{{- end }}
{{- $cred := .Values.keda.gcpPubsub.credentialsSecret }}
{{- if and $cred.name (not $cred.key) }}
{{- fail "keda.gcpPubsub.credentialsSecret.key is required with credentialsSecret.name" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The azure-servicebus trigger's metadata as JSON: keda.azureServicebus, whose empty
namespace, queueName, topicName and subscriptionName default to config.source when that is
a Service Bus source. The namespace may be a name or a full host name; a host name's
suffix picks KEDA's `cloud` (and `endpointSuffix` for a private cloud).
*/}}
{{- define "regrelay.kedaServicebus" -}}
{{- $k := .Values.keda.azureServicebus }}
{{- $src := .Values.config.source | default dict }}
{{- $fromSource := eq ($src.kind | toString) "servicebus" }}
{{- $host := $k.namespace | default (ternary ($src.namespace | default "") "" $fromSource) | lower }}
{{- $out := dict "namespace" (regexReplaceAll "\\..*$" $host "") }}
{{- $suffix := trimPrefix "." (trimPrefix (get $out "namespace") $host) }}
{{- if eq $suffix "servicebus.chinacloudapi.cn" }}
{{- $_ := set $out "cloud" "AzureChinaCloud" }}
{{- else if eq $suffix "servicebus.usgovcloudapi.net" }}
{{- $_ := set $out "cloud" "AzureUSGovernmentCloud" }}
{{- else if and $suffix (ne $suffix "servicebus.windows.net") }}
{{- $_ := set $out "cloud" "Private" }}
{{- $_ := set $out "endpointSuffix" $suffix }}
{{- end }}
{{- if or $k.queueName $k.topicName }}
{{- $_ := set $out "queueName" $k.queueName }}
{{- $_ := set $out "topicName" $k.topicName }}
{{- $_ := set $out "subscriptionName" $k.subscriptionName }}
{{- else if $fromSource }}
{{- $_ := set $out "queueName" ($src.queue | default "") }}
{{- $_ := set $out "topicName" ($src.topic | default "") }}
{{- $_ := set $out "subscriptionName" (ternary ($src.subscription | default "") "" (not (empty $src.topic))) }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* Volume mounts shared by the regrelay container and the check-config init container. */}}
{{- define "regrelay.volumeMounts" -}}
- name: config
  mountPath: /etc/regrelay
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- range .Values.secretMounts }}
- name: secret-{{ .name }}
  mountPath: {{ include "regrelay.secretsDir" $ }}/{{ .name }}
  readOnly: true
{{- end }}
{{- if .Values.dockerConfig.secretName }}
- name: docker-config
  mountPath: {{ include "regrelay.secretsDir" . }}/docker
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Environment shared by the regrelay container and the check-config init container. */}}
{{- define "regrelay.env" -}}
- name: REGRELAY_LOG
  value: {{ .Values.logFilter | quote }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The container security context: fixed, not a value. */}}
{{- define "regrelay.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The matcher that scopes PrometheusRule expressions to this release. */}}
{{- define "regrelay.alertSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "job=%q,namespace=%q" (include "regrelay.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}
