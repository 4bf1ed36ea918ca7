{{/*
The training pod's template (metadata + spec), as k8s/_macros.yaml.j2 lays it out for
`llmlaunch render`: non-root, no privilege escalation, capabilities dropped, read-only root
filesystem, the config mounted read-only, /tmp and /dev/shm as emptyDirs, the data claim.
*/}}
{{- define "llmlaunch.podTemplate" -}}
{{- $v := .Values -}}
{{- $metrics := include "llmlaunch.metrics" . | fromJson -}}
{{- $sched := $v.scheduling -}}
{{- $volumes := include "llmlaunch.volumes" . | fromJsonArray -}}
{{- $storage := include "llmlaunch.storageEnabled" . -}}
metadata:
  {{- include "llmlaunch.podMetadata" . | nindent 2 }}
spec:
  {{- with $v.serviceAccount }}
  serviceAccountName: {{ quote . }}
  {{- end }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ int $v.terminationGracePeriodSeconds }}
  {{- with $sched.priorityClass }}
  priorityClassName: {{ quote . }}
  {{- end }}
  {{- with $sched.schedulerName }}
  schedulerName: {{ quote . }}
  {{- end }}
  {{- include "llmlaunch.podPlacement" . | nindent 2 }}
  securityContext:
    {{- include "llmlaunch.podSecurity" . | nindent 4 }}
  containers:
    - name: {{ include "llmlaunch.containerName" . | quote }}
      image: {{ quote $v.image }}
      imagePullPolicy: {{ quote $v.imagePullPolicy }}
      command:
        {{- range include "llmlaunch.command" . | fromJsonArray }}
        - {{ quote . }}
        {{- end }}
      {{- if and $storage (ne $v.api "trainjob") }}
      workingDir: {{ quote $v.storage.mountPath }}
      {{- end }}
      env:
        {{- include "llmlaunch.envList" . | trim | nindent 8 }}
      {{- if or (ne $v.api "trainjob") $metrics.enabled }}
      ports:
        {{- if ne $v.api "trainjob" }}
        - name: "pytorchjob-port"
          containerPort: {{ include "llmlaunch.const.pytorchjobPort" . }}
          protocol: "TCP"
        {{- end }}
        {{- if $metrics.enabled }}
        - name: "metrics"
          containerPort: {{ $metrics.port }}
          protocol: "TCP"
        {{- end }}
      {{- end }}
      resources:
        {{- include "llmlaunch.resourceParts" . | trim | nindent 8 }}
      securityContext:
        {{- include "llmlaunch.containerSecurity" . | nindent 8 }}
      volumeMounts:
        {{- include "llmlaunch.volumeMounts" $volumes | trim | nindent 8 }}
  volumes:
    {{- include "llmlaunch.volumeSources" $volumes | trim | nindent 4 }}
{{- end -}}

{{/* The parts a PyTorchJob's pod template and a TrainJob's runtime patch share (k8s/_macros.yaml.j2). */}}
{{- define "llmlaunch.podMetadata" -}}
{{- $metrics := include "llmlaunch.metrics" . | fromJson -}}
{{- $annotations := include "llmlaunch.strings" (.Values.annotations | default dict) | fromJson -}}
{{- if $metrics.enabled -}}
{{- $_ := set $annotations "prometheus.io/scrape" "true" -}}
{{- $_ = set $annotations "prometheus.io/port" (toString $metrics.port) -}}
{{- $_ = set $annotations "prometheus.io/path" "/metrics" -}}
{{- end -}}
labels:
  {{- include "llmlaunch.labels" (dict "root" . "component" "trainer") | fromJson | include "llmlaunch.mapping" | nindent 2 }}
{{- if $annotations }}
annotations:
  {{- include "llmlaunch.mapping" $annotations | nindent 2 }}
{{- end }}
{{- end -}}

{{/* nodeSelector, tolerations, affinity, imagePullSecrets: each only when set. */}}
{{- define "llmlaunch.podPlacement" -}}
{{- $sched := .Values.scheduling -}}
{{- with $sched.nodeSelector }}
nodeSelector:
  {{- include "llmlaunch.strings" . | fromJson | include "llmlaunch.mapping" | nindent 2 }}
{{- end }}
{{- with $sched.tolerations }}
tolerations:
  {{- range include "llmlaunch.tolerations" . | fromJsonArray }}
  - {{ include "llmlaunch.flow" . }}
  {{- end }}
{{- end }}
{{- with $sched.affinity }}
affinity: {{ include "llmlaunch.flow" . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ quote . }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "llmlaunch.podSecurity" -}}
{{- $sec := .Values.security -}}
runAsNonRoot: true
runAsUser: {{ int $sec.runAsUser }}
runAsGroup: {{ int $sec.runAsGroup }}
{{- with $sec.fsGroup }}
fsGroup: {{ int . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "llmlaunch.containerSecurity" -}}
allowPrivilegeEscalation: false
privileged: false
runAsNonRoot: true
readOnlyRootFilesystem: {{ .Values.security.readOnlyRootFilesystem | toJson }}
capabilities:
  drop: ["ALL"]
  {{- with include "llmlaunch.capabilities" . | fromJsonArray }}
  add: {{ include "llmlaunch.flow" . }}
  {{- end }}
{{- end -}}

{{/* The operators inject PET_* only into the container with this name. */}}
{{- define "llmlaunch.containerName" -}}
{{- ternary (include "llmlaunch.const.trainjobContainer" .) (include "llmlaunch.const.pytorchjobContainer" .) (eq .Values.api "trainjob") -}}
{{- end -}}

{{/* Tolerations (JSON list) with the unset fields left out. */}}
{{- define "llmlaunch.tolerations" -}}
{{- $out := list -}}
{{- range $toleration := . -}}
{{- $t := dict -}}
{{- range $key := list "key" "operator" "value" "effect" "tolerationSeconds" -}}
{{- $value := get $toleration $key -}}
{{- if and (not (kindIs "invalid" $value)) (eq $key "tolerationSeconds") -}}
{{- $_ := set $t $key (int $value) -}}
{{- else if not (kindIs "invalid" $value) -}}
{{- $_ := set $t $key $value -}}
{{- end -}}
{{- end -}}
{{- $out = append $out $t -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{- define "llmlaunch.volumeMounts" -}}
{{- range . }}
- name: {{ quote .name }}
  mountPath: {{ quote .path }}
  {{- if .readOnly }}
  readOnly: true
  {{- end }}
{{- end }}
{{- end -}}

{{- define "llmlaunch.volumeSources" -}}
{{- range . }}
- name: {{ quote .name }}
  {{- range $kind, $source := .source }}
  {{ $kind }}: {{ include "llmlaunch.flow" $source }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* The env list (llmlaunch.env) laid out: value, valueFrom.fieldRef or valueFrom.secretKeyRef. */}}
{{- define "llmlaunch.envList" -}}
{{- range include "llmlaunch.env" . | fromJsonArray }}
- name: {{ quote .name }}
  {{- with .valueFrom }}
  valueFrom:
  {{- if .fieldRef }}
    fieldRef:
      fieldPath: {{ quote .fieldRef.fieldPath }}
  {{- else }}
    secretKeyRef:
      name: {{ quote .secretKeyRef.name }}
      key: {{ quote .secretKeyRef.key }}
      optional: {{ toJson .secretKeyRef.optional }}
  {{- end }}
  {{- else }}
  value: {{ quote .value }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* requests / limits (llmlaunch.resources) laid out; an empty part is left out. */}}
{{- define "llmlaunch.resourceParts" -}}
{{- range $part, $values := include "llmlaunch.resources" . | fromJson }}
{{ $part }}:
  {{- include "llmlaunch.mapping" $values | nindent 2 }}
{{- end }}
{{- end -}}
