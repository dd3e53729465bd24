{{- define "runnel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "runnel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object; call with (dict "root" $ "component" "ingress"). */}}
{{- define "runnel.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: runnel
{{ include "runnel.selectorLabels" . }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "runnel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runnel.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "runnel.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{- define "runnel.natsImage" -}}
{{- if .Values.nats.image.digest -}}
{{ .Values.nats.image.repository }}@{{ .Values.nats.image.digest }}
{{- else -}}
{{ .Values.nats.image.repository }}:{{ .Values.nats.image.tag }}
{{- end -}}
{{- end -}}

{{- define "runnel.secretName" -}}
{{- default (printf "%s-secrets" (include "runnel.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "runnel.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create -}}
{{ include "runnel.fullname" .root }}-{{ .component }}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{- define "runnel.natsUrl" -}}
{{- if .Values.nats.external.url -}}
{{ .Values.nats.external.url }}
{{- else -}}
nats://{{ include "runnel.fullname" . }}-nats.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:4222
{{- end -}}
{{- end -}}

{{/* gRPC target with DNS resolution over the headless Service: clients balance over every control-plane replica. */}}
{{- define "runnel.controlPlaneUrl" -}}
dns:///{{ include "runnel.fullname" . }}-control-plane-headless.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:{{ .Values.controlPlane.grpcPort }}
{{- end -}}

{{/* Environment shared by the Runnel services; call with (dict "root" $ "component" "worker"). */}}
{{- define "runnel.commonEnv" -}}
- name: POD_NAME
  valueFrom: { fieldRef: { fieldPath: metadata.name } }
- name: POD_NAMESPACE
  valueFrom: { fieldRef: { fieldPath: metadata.namespace } }
- name: INSTANCE_ID
  value: "$(POD_NAME)"
- name: HOST
  value: "0.0.0.0"
- name: RUNNEL_CONFIG
  value: /etc/runnel/runnel.yaml
- name: NATS_URL
  value: {{ include "runnel.natsUrl" .root | quote }}
- name: CONTROL_PLANE_URL
  value: {{ include "runnel.controlPlaneUrl" .root | quote }}
- name: LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
{{- if .root.Values.mockProvider.enabled }}
- name: MOCK_HOST
  value: {{ printf "%s-mock-provider.%s.svc.%s" (include "runnel.fullname" .root) .root.Release.Namespace .root.Values.clusterDomain | quote }}
- name: MOCK_PORT
  value: {{ .root.Values.mockProvider.port | quote }}
{{- end }}
{{- with .root.Values.otel }}
{{- if .endpoint }}
- name: OTEL_SERVICE_NAME
  value: runnel-{{ $.component }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .tracesSampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .tracesSamplerArg | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ $attributes := list (printf "service.namespace=runnel") (printf "k8s.namespace.name=%s" $.root.Release.Namespace) "k8s.pod.name=$(POD_NAME)" }}{{ range $key, $value := .resourceAttributes }}{{ $attributes = append $attributes (printf "%s=%s" $key $value) }}{{ end }}{{ join "," $attributes | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "runnel.envFrom" -}}
- secretRef:
    name: {{ include "runnel.secretName" . }}
{{- end -}}

{{- define "runnel.volumeMounts" -}}
- name: config
  mountPath: /etc/runnel
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "runnel.volumes" -}}
- name: config
  configMap:
    name: {{ include "runnel.fullname" . }}-config
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{/* Pod-level settings shared by every workload; call with (dict "root" $ "component" "ingress" "values" .Values.ingress). */}}
{{- define "runnel.podSpecCommon" -}}
serviceAccountName: {{ include "runnel.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: {{ .root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "runnel.selectorLabels" . | nindent 8 }}
    matchLabelKeys: [pod-template-hash]
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: {{ .root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "runnel.selectorLabels" . | nindent 8 }}
    matchLabelKeys: [pod-template-hash]
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Rolls pods when runnel.yaml or the chart-made Secret changes. */}}
{{- define "runnel.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end -}}

{{/* NetworkPolicy egress rules: DNS, and NATS (the chart's or an external one). */}}
{{- define "runnel.np.dns" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels: { k8s-app: kube-dns }
  ports:
    - { port: 53, protocol: UDP }
    - { port: 53, protocol: TCP }
{{- end }}
{{- define "runnel.np.nats" -}}
{{- if .Values.nats.external.url }}
- {{ with .Values.nats.external.egressTo }}to:
    {{- toYaml . | nindent 4 }}
  {{ end }}ports:
    - { port: {{ .Values.nats.external.port }}, protocol: TCP }
{{- else }}
- to:
    - podSelector:
        matchLabels:
          {{- include "runnel.selectorLabels" (dict "root" . "component" "nats") | nindent 10 }}
  ports:
    - { port: 4222, protocol: TCP }
{{- end }}
{{- end }}
