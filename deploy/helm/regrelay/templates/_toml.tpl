{{/*
`config` (structured values) to regrelay's TOML file.

Layout: [source], [pipeline], then [admin] (written by the chart from adminPort), the
optional [reconcile], one
[registries."HOST"] table per entry of the `registries` list (its `host` is the key), and
one [[rules]] table per rule with its [[rules.targets]], and one [gates."NAME"] table per
entry of the `gates` map. Inside a table every key is
`key = value` in key order; nested maps become inline tables and lists inline arrays.

Scalars go through toJson: a JSON string is a valid TOML basic string (the escapes Go
writes, \" \\ \n \t \u00XX, are TOML escapes too), and JSON numbers and booleans are TOML
numbers and booleans. Integral numbers print without a fraction (Helm holds values as
float64), which regrelay's integer and float fields both accept. Null values are left out,
so `key: null` in a values file drops a default.

Inline secrets (`password`, `token`, `client_secret`, `connection_string`, `key`) are
refused here, at every depth, so no value can land in the ConfigMap.
*/}}

{{/* A key: bare when TOML allows it, else a quoted string. */}}
{{- define "regrelay.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}
{{- . -}}
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}

{{/*
Refuse a key that would put a secret into the ConfigMap. Argument: the key. Besides the
registry credentials (`password`, `token`) this covers the Entra ID client secret of
`acr_entra` and `entra` auth (`client_secret`) and the Service Bus SAS credentials
(`connection_string`, `key`); each has a `_file` and an `_env` form.
*/}}
{{- define "regrelay.toml.noSecret" -}}
{{- if has . (list "password" "token" "client_secret" "connection_string" "key") -}}
{{- fail (printf "config: %q would put a secret into the ConfigMap; use %s_file with secretMounts or %s_env with env valueFrom.secretKeyRef" . . .) -}}
{{- end -}}
{{- end -}}

{{/* An inline value. Argument: the value. */}}
{{- define "regrelay.toml.value" -}}
{{- $v := . -}}
{{- if kindIs "map" $v -}}
{{- $parts := list -}}
{{- range $k := keys $v | sortAlpha -}}
{{- include "regrelay.toml.noSecret" $k -}}
{{- $e := get $v $k -}}
{{- if not (kindIs "invalid" $e) -}}
{{- $parts = append $parts (printf "%s = %s" (include "regrelay.toml.key" $k) (include "regrelay.toml.value" $e)) -}}
{{- end -}}
{{- end -}}
{{- if $parts -}}
{{- printf "{ %s }" (join ", " $parts) -}}
{{- else -}}
{}
{{- end -}}
{{- else if kindIs "slice" $v -}}
{{- $parts := list -}}
{{- range $e := $v -}}
{{- $parts = append $parts (include "regrelay.toml.value" $e) -}}
{{- end -}}
[{{ join ", " $parts }}]
{{- else if kindIs "invalid" $v -}}
{{- fail "config: a null inside a list cannot be written to TOML" -}}
{{- else -}}
{{- toJson $v -}}
{{- end -}}
{{- end -}}

{{/*
The `key = value` lines of one table. Argument: dict "table" MAP "skip" LIST (keys
rendered elsewhere, e.g. `targets`).
*/}}
{{- define "regrelay.toml.keys" -}}
{{- $t := .table | default dict -}}
{{- range $k := keys $t | sortAlpha -}}
{{- if not (has $k $.skip) -}}
{{- include "regrelay.toml.noSecret" $k -}}
{{- $v := get $t $k -}}
{{- if not (kindIs "invalid" $v) }}
{{ include "regrelay.toml.key" $k }} = {{ include "regrelay.toml.value" $v }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Keys of `config.source` left out of the file, as a JSON list: a Service Bus source without
a topic drops a Pub/Sub subscription path (projects/...), which is values.yaml's default
merged into a Service Bus source by Helm (a queue has no subscription). Argument: the
source map.
*/}}
{{- define "regrelay.toml.sourceSkip" -}}
{{- $s := . | default dict -}}
{{- if and (eq ($s.kind | toString) "servicebus") (not $s.topic) (regexMatch "^projects/" ($s.subscription | default "" | toString)) -}}
["subscription"]
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/* The whole file. Argument: the root context. */}}
{{- define "regrelay.configToml" -}}
{{- $c := .Values.config -}}
# Rendered by the regrelay Helm chart from the `config` value; edit the values, not this file.
[source]
{{- include "regrelay.toml.keys" (dict "table" $c.source "skip" (include "regrelay.toml.sourceSkip" $c.source | fromJsonArray)) }}

[pipeline]
{{- include "regrelay.toml.keys" (dict "table" $c.pipeline "skip" list) }}

[admin]
listen = {{ printf "0.0.0.0:%d" (int .Values.adminPort) | toJson }}
{{- with $c.reconcile }}

[reconcile]
{{- include "regrelay.toml.keys" (dict "table" . "skip" list) }}
{{- end }}
{{- range $r := $c.registries }}

[registries.{{ toJson $r.host }}]
{{- include "regrelay.toml.keys" (dict "table" $r "skip" (list "host")) }}
{{- end }}
{{- range $rule := $c.rules }}

[[rules]]
{{- include "regrelay.toml.keys" (dict "table" $rule "skip" (list "targets")) }}
{{- range $t := $rule.targets }}
[[rules.targets]]
{{- include "regrelay.toml.keys" (dict "table" $t "skip" list) }}
{{- end }}
{{- end }}
{{- range $name, $g := $c.gates }}

[gates.{{ toJson $name }}]
{{- include "regrelay.toml.keys" (dict "table" $g "skip" list) }}
{{- end }}
{{ end -}}
