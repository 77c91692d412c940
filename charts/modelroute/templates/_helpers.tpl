{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "modelroute.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name, used for every cluster-wide object. */}}
{{- define "modelroute.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "modelroute.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "modelroute.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelroute.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "modelroute.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "modelroute.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelroute
{{- end -}}

{{- define "modelroute.serviceAccountName" -}}
{{- default (include "modelroute.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* repo:tag, or repo@digest when image.digest pins it (issue 13). */}}
{{- define "modelroute.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "modelroute.sidecarImage" -}}
{{- $repo := default .Values.image.repository .Values.sidecar.image.repository -}}
{{- if and .Values.image.digest (not .Values.sidecar.image.repository) (not .Values.sidecar.image.tag) -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.sidecar.image.tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* The unbound pods-list ClusterRole the operator binds in each enrolled namespace. */}}
{{- define "modelroute.podReaderRole" -}}
{{- printf "%s-pod-reader" (include "modelroute.fullname" . | trunc 52 | trimSuffix "-") -}}
{{- end -}}

{{- define "modelroute.webhookService" -}}
{{- printf "%s-webhook" (include "modelroute.fullname" .) -}}
{{- end -}}

{{- define "modelroute.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "modelroute.fullname" .) -}}
{{- end -}}

{{/*
Server version for the injector: what helm sees, or forced by
sidecar.nativeSidecar (true → 1.29, false → 1.28).
*/}}
{{- define "modelroute.kubeVersion" -}}
{{- if eq (toString .Values.sidecar.nativeSidecar) "true" -}}v1.29.0
{{- else if eq (toString .Values.sidecar.nativeSidecar) "false" -}}v1.28.0
{{- else -}}{{ .Capabilities.KubeVersion.Version }}
{{- end -}}
{{- end -}}

{{/*
Self-signed webhook certificates, generated once per render and shared by the
Secret and both webhook configurations (cached on .Values so every template
sees the same CA).  An existing Secret is reused so upgrades don't rotate.
*/}}
{{- define "modelroute.webhookCerts" -}}
{{- if not .Values._webhookCerts -}}
{{- $svc := include "modelroute.webhookService" . -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "modelroute.webhookSecret" .) -}}
{{- if and $existing (index $existing.data "ca.crt") -}}
{{- $_ := set .Values "_webhookCerts" (dict "ca" (index $existing.data "ca.crt") "crt" (index $existing.data "tls.crt") "key" (index $existing.data "tls.key")) -}}
{{- else -}}
{{- $dns := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) -}}
{{- $ca := genCA (printf "%s-ca" $svc) (int .Values.webhook.certValidityDays) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc .Release.Namespace) nil $dns (int .Values.webhook.certValidityDays) $ca -}}
{{- $_ := set .Values "_webhookCerts" (dict "ca" ($ca.Cert | b64enc) "crt" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc)) -}}
{{- end -}}
{{- end -}}
{{- toYaml .Values._webhookCerts -}}
{{- end -}}

{{/* clientConfig.caBundle or the cert-manager annotation, per mode. */}}
{{- define "modelroute.webhookAnnotations" -}}
{{- if .Values.certManager.enabled }}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s-webhook" .Release.Namespace (include "modelroute.fullname" .) }}
{{- end }}
{{- end -}}

{{- define "modelroute.clientConfig" -}}
{{- $ctx := index . 0 -}}
{{- $path := index . 1 -}}
clientConfig:
  service:
    name: {{ include "modelroute.webhookService" $ctx }}
    namespace: {{ $ctx.Release.Namespace }}
    path: {{ $path }}
    port: 443
  {{- if not $ctx.Values.certManager.enabled }}
  caBundle: {{ (include "modelroute.webhookCerts" $ctx | fromYaml).ca }}
  {{- end }}
{{- end -}}

{{/*
The operator's cluster-wide permissions: exactly what it uses.  Each rule says
which code path needs it; tests/chart/test_rbac.py derives the used set from the
requests the operator sends while its kmock scenarios run and fails on any
permission granted but unused (or used but not granted).  No write on
namespaces: namespace handlers are kopf event handlers, which store no state.
*/}}
{{- define "modelroute.operatorRules" -}}
# kopf watches the three kinds and patches its progress/diff-base annotations (and
# the daemon's finalizer) onto them; the FailoverPolicy rollout reads its policy
- apiGroups: ["modelroute.io"]
  resources: ["modelroutes", "modelproviders"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["modelroute.io"]
  resources: ["failoverpolicies"]
  verbs: ["get", "list", "watch", "patch"]
# route conditions/hash and rollout progress
- apiGroups: ["modelroute.io"]
  resources: ["modelroutes/status", "failoverpolicies/status"]
  verbs: ["patch"]
# the compiled table per namespace (ConfigMap modelroute-table), and no other ConfigMap:
# read, patch and delete are limited to that name (the resync's cluster-wide list selects
# it by metadata.name, which RBAC matches against resourceNames); watch is never called
# but must be held to grant it in the sidecar Role.  create can't be limited by name in
# RBAC, but it can't touch an existing object either.
- apiGroups: [""]
  resources: ["configmaps"]
  resourceNames: ["modelroute-table"]
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create"]
# the sidecars' read-only Role and RoleBinding per enrolled namespace (patch repairs
# edits), and the operator's own pod-list RoleBinding there, by name: no other Role or
# RoleBinding of the cluster.  create can't be limited by name in RBAC.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles"]
  resourceNames: ["modelroute-sidecar"]
  verbs: ["get", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["rolebindings"]
  resourceNames: ["modelroute-sidecar", "modelroute-operator-pods"]
  verbs: ["get", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["create"]
# no pods right here: the rollout's sidecar health gate lists the pods of enrolled
# namespaces only, through the unbound ClusterRole <fullname>-pod-reader, which the
# operator binds to itself in each namespace it enrols (RoleBinding
# modelroute-operator-pods).  bind is what lets it reference that one role without
# holding its rights cluster-wide (RBAC's escalation check), and it names no other role.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["clusterroles"]
  resourceNames: [{{ include "modelroute.podReaderRole" . | quote }}]
  verbs: ["bind"]
# enrolment labels, FailoverPolicy selectors, the injector's namespace index
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
# Warning events on routes and policies (operator and kopf post core v1 events)
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# kopf peering between the replicas (cluster-wide ClusterKopfPeering, created by the chart)
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["list", "watch", "patch"]
# kopf's resource scanning
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end -}}

{{/* A map as k=v,k=v in key order (OTEL_RESOURCE_ATTRIBUTES' format). */}}
{{- define "modelroute.keyValues" -}}
{{- $pairs := list }}
{{- range $k, $v := . }}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $pairs }}
{{- end -}}
