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

{{- define "modelroute.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "modelroute.sidecarImage" -}}
{{- $repo := default .Values.image.repository .Values.sidecar.image.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.sidecar.image.tag -}}
{{- printf "%s:%s" $repo $tag -}}
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
The operator's cluster-wide permissions: the single list the ClusterRole is
rendered from and tests/chart/test_rbac.py compares against.  Each rule says
which operator code path needs it.
*/}}
{{- define "modelroute.operatorRules" -}}
# watch resources, patch finalizers/annotations (kopf progress), write status
- apiGroups: ["modelroute.io"]
  resources: ["modelroutes", "modelproviders", "failoverpolicies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["modelroute.io"]
  resources: ["modelroutes/status", "modelproviders/status", "failoverpolicies/status"]
  verbs: ["patch"]
# the compiled table per namespace (ConfigMap modelroute-table)
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# the sidecars' read-only Role and RoleBinding per enrolled namespace
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# enrolment labels, FailoverPolicy selectors, the injector's namespace index
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
# the rollout's sidecar health gate
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# kopf posts events for handler outcomes
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# kopf peering (HA between the replicas)
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings", "kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
# kopf's resource scanning
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end -}}
