{{/*
The name of every object: fullnameOverride, else the release name if it contains the chart's
name, else "<release>-<chart name>". 63 characters at most (a label value).
*/}}
{{- define "kubescaler.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubescaler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The labels of every object: the base's (name, part-of) plus Helm's. */}}
{{- define "kubescaler.labels" -}}
app.kubernetes.io/name: {{ include "kubescaler.name" . }}
app.kubernetes.io/part-of: kubescaler
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* The Deployment's selector and pod labels. */}}
{{- define "kubescaler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubescaler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{/*
config.yaml: .Values.config with what the toggles set (agones.enabled: server-source;
clusterapi.enabled: cloud-provider, no token file) and "" as null (unset), after the checks
that keep the objects consistent. Every key of .Values.config is in it.
*/}}
{{- define "kubescaler.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- if hasKey $config "cloud-provider-token" -}}
{{- fail "config.cloud-provider-token must not be set: the token never goes into the ConfigMap. Put it in a Secret and name it in tokenSecret (it is mounted as config.cloud-provider-token-file)" -}}
{{- end -}}
{{- if index $config "leader-election-identity" -}}
{{- fail "config.leader-election-identity must stay unset: the Deployment gives each replica its pod name, and a fixed identity would let two replicas lead at once" -}}
{{- end -}}
{{- if .Values.agones.enabled -}}
{{- $_ := set $config "server-source" "agones" -}}
{{- end -}}
{{- if .Values.clusterapi.enabled -}}
{{- $_ := set $config "cloud-provider" "clusterapi" -}}
{{- $_ := set $config "cloud-provider-token-file" "" -}}
{{- end -}}
{{- /* "" is the chart's unset (Helm drops null values): null in config.yaml. */ -}}
{{- range $key, $value := $config -}}
{{- if and (kindIs "string" $value) (eq $value "") -}}
{{- $_ := set $config $key nil -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Whether leader election is on: config.leader-election, true unless set to false. */}}
{{- define "kubescaler.leaderElection" -}}
{{- $v := index .Values.config "leader-election" -}}
{{- if and (kindIs "bool" $v) (not $v) -}}false{{- else -}}true{{- end -}}
{{- end -}}

{{/* The namespace of the Lease: config.leader-election-namespace, else the release's. */}}
{{- define "kubescaler.leaseNamespace" -}}
{{- default .Release.Namespace (index .Values.config "leader-election-namespace") -}}
{{- end -}}

{{/* The name of the Lease: config.leader-election-lease-name, else kubescaler's default. */}}
{{- define "kubescaler.leaseName" -}}
{{- default "kubescaler" (index .Values.config "leader-election-lease-name") -}}
{{- end -}}

{{/* The HTTP port: the port of config.http-listen-address (default 0.0.0.0:8080). */}}
{{- define "kubescaler.httpPort" -}}
{{- $addr := toString (default "0.0.0.0:8080" (index .Values.config "http-listen-address")) -}}
{{- $port := regexFind ":[0-9]+$" $addr | trimPrefix ":" -}}
{{- if not $port -}}
{{- fail (printf "config.http-listen-address %q has no port" $addr) -}}
{{- end -}}
{{- $port -}}
{{- end -}}

{{/* The token file (empty with clusterapi.enabled or no tokenSecret.name). */}}
{{- define "kubescaler.tokenFile" -}}
{{- if and .Values.tokenSecret.name (not .Values.clusterapi.enabled) -}}
{{- $file := index .Values.config "cloud-provider-token-file" -}}
{{- if not $file -}}
{{- fail "tokenSecret.name is set but config.cloud-provider-token-file is not: the Secret is mounted as that file" -}}
{{- end -}}
{{- if not (isAbs $file) -}}
{{- fail (printf "config.cloud-provider-token-file %q must be an absolute path" $file) -}}
{{- end -}}
{{- $file -}}
{{- end -}}
{{- end -}}
