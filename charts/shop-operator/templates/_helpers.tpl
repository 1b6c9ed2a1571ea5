{{/* The release's full name: the release name, with the chart's name in it when it lacks it. */}}
{{- define "shop-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "shop-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shop-operator.labels" -}}
{{ include "shop-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: shop
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "shop-operator.serviceAccountName" -}}
{{- default (include "shop-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "shop-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The one namespace watched in scope Namespace. */}}
{{- define "shop-operator.watchedNamespace" -}}
{{- default .Release.Namespace .Values.watch.namespace -}}
{{- end -}}

{{/*
What the operator needs, rule by rule from the API calls in operator/src/controller/. No
wildcards. Deletion only where the operator deletes: children that come and go (HPA, PDB, route
table ConfigMap), the credentials Secret and the volumes of a database whose deletionPolicy is
Delete; everything else goes through owner references and the garbage collector. Applying an
object that does not exist yet needs `create` as well as `patch`.
*/}}
{{- define "shop-operator.rules" -}}
# The ShopServices: watched; patched to add and remove the finalizer.
- apiGroups: [shop.dev]
  resources: [shopservices]
  verbs: [list, watch, patch]
# Status, written with server-side apply.
- apiGroups: [shop.dev]
  resources: [shopservices/status]
  verbs: [patch]
# Children that exist as long as their ShopService: applied and watched, never deleted here.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch]
# Deleted only to be created again at once, orphaning the pod and the claim, when a field
# that cannot change in place must change (serviceName, volumeClaimTemplates).
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services, serviceaccounts]
  verbs: [list, watch, create, patch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch, create, patch]
# Children that are pruned when no longer desired.
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, watch, create, patch, delete]
# Database credentials: read back (the password is never regenerated), applied, released from
# their owner on Retain, deleted on Delete.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
# The volume of a Dedicated database: grown when spec.database.storage grows, deleted with
# deletionPolicy Delete.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, patch, deletecollection]
# Events about ShopServices (kube's Recorder: events.k8s.io/v1).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
