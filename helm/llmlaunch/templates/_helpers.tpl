{{/*
Helpers of the llmlaunch chart. They mirror launcher/spec/names.py and launcher/render/pod_values.py, which
`llmlaunch render` uses; tests/test_chart_parity.py checks both give the same objects for every
example. Every value from the values file is written through llmlaunch.flow or quote: a
double-quoted scalar with Go's escapes (which YAML reads back exactly, unlike toJson and toYaml
for characters such as U+0085) or a flow collection of them, so no string in the values can
change the structure of a manifest or a character of itself.
*/}}

{{/* Any value as one YAML flow node, like render's |tojson: strings quoted and escaped. */}}
{{- define "llmlaunch.flow" -}}
{{- $node := . -}}
{{- if kindIs "map" $node -}}
{{- $items := list -}}
{{- range $key := keys $node | sortAlpha -}}
{{- $items = append $items (printf "%s: %s" (quote $key) (include "llmlaunch.flow" (get $node $key))) -}}
{{- end -}}
{{- printf "{%s}" (join ", " $items) -}}
{{- else if kindIs "slice" $node -}}
{{- $items := list -}}
{{- range $node -}}
{{- $items = append $items (include "llmlaunch.flow" .) -}}
{{- end -}}
{{- printf "[%s]" (join ", " $items) -}}
{{- else if kindIs "string" $node -}}
{{- quote $node -}}
{{- else if kindIs "invalid" $node -}}
null
{{- else -}}
{{- toJson $node -}}
{{- end -}}
{{- end -}}

{{- /* A label selector: matchLabels, or {} (select all) when there are none; the API server stores an
empty matchLabels as {}, so the chart writes what the server keeps. */ -}}
{{- define "llmlaunch.labelSelector" -}}
{{- if . -}}
matchLabels:
  {{- include "llmlaunch.strings" . | fromJson | include "llmlaunch.mapping" | nindent 2 }}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{/* A map as block mapping lines ("key": flow value), for nindent; {} when empty. */}}
{{- define "llmlaunch.mapping" -}}
{{- $node := . -}}
{{- if not $node -}}
{}
{{- end -}}
{{- range $i, $key := keys $node | sortAlpha -}}
{{- if $i }}{{ "\n" }}{{ end -}}
{{ quote $key }}: {{ include "llmlaunch.flow" (get $node $key) }}
{{- end -}}
{{- end -}}

{{/* The job name: .Values.name, else the release name. Every object's name starts with it. */}}
{{- define "llmlaunch.name" -}}
{{- $name := .Values.name | default .Release.Name -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- fail (printf "name: %q must start with a letter and hold only lowercase letters, digits and '-' (Kubernetes services are named after it); set the value name" $name) -}}
{{- end -}}
{{- $max := int (include "llmlaunch.const.maxNameLength" .) -}}
{{- if gt (len $name) $max -}}
{{- fail (printf "name: %q has %d characters, at most %d fit the names the operators derive from it; set the value name" $name (len $name) $max) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{- define "llmlaunch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A map with every value as a string: Kubernetes wants strings where --set may give numbers. */}}
{{- define "llmlaunch.strings" -}}
{{- $out := dict -}}
{{- range $key, $value := . -}}
{{- $_ := set $out $key (toString $value) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
Standard labels (JSON). Argument: dict root, component, extra (labels merged last).
instance is the job name, which `llmlaunch status/logs` and the pod selectors use.
*/}}
{{- define "llmlaunch.labels" -}}
{{- $root := .root -}}
{{- $labels := include "llmlaunch.strings" ($root.Values.labels | default dict) | fromJson -}}
{{- $_ := set $labels "app.kubernetes.io/name" "llmlaunch" -}}
{{- $_ = set $labels "app.kubernetes.io/instance" (include "llmlaunch.name" $root) -}}
{{- $_ = set $labels "app.kubernetes.io/component" .component -}}
{{- $_ = set $labels "app.kubernetes.io/managed-by" $root.Release.Service -}}
{{- $_ = set $labels "app.kubernetes.io/version" $root.Chart.AppVersion -}}
{{- $_ = set $labels "helm.sh/chart" (include "llmlaunch.chart" $root) -}}
{{- $extra := include "llmlaunch.strings" (.extra | default dict) | fromJson -}}
{{- toJson (merge $extra $labels) -}}
{{- end -}}

{{/* Labels that pick the job's training pods (PodMonitor, NetworkPolicy). */}}
{{- define "llmlaunch.podSelector" -}}
{{- $name := include "llmlaunch.name" . -}}
{{- if eq .Values.api "trainjob" -}}
{{- /* A TrainJob cannot label its pods; JobSet labels them with the job's name. */ -}}
{{- toJson (dict "jobset.sigs.k8s.io/jobset-name" $name) -}}
{{- else -}}
{{- toJson (dict "app.kubernetes.io/name" "llmlaunch" "app.kubernetes.io/instance" $name "app.kubernetes.io/component" "trainer") -}}
{{- end -}}
{{- end -}}

{{/* metadata of an object. Argument: dict root, name, component, extra (labels), annotations. */}}
{{- define "llmlaunch.metadata" -}}
{{- $annotations := include "llmlaunch.strings" (merge (dict) (.annotations | default dict) (.root.Values.annotations | default dict)) | fromJson -}}
name: {{ quote .name }}
namespace: {{ quote .root.Release.Namespace }}
labels:
  {{- include "llmlaunch.labels" . | fromJson | include "llmlaunch.mapping" | nindent 2 }}
{{- if $annotations }}
annotations:
  {{- include "llmlaunch.mapping" $annotations | nindent 2 }}
{{- end }}
{{- end -}}

{{/* train.metrics of train.yaml (JSON: enabled, port): the pods serve what train.yaml says. */}}
{{- define "llmlaunch.metrics" -}}
{{- $train := fromYaml .Values.config.trainYaml -}}
{{- if hasKey $train "Error" -}}
{{- fail (printf "config.trainYaml: not valid YAML (%s); write it with llmlaunch values" $train.Error) -}}
{{- end -}}
{{- $metrics := $train.metrics | default dict -}}
{{- toJson (dict "enabled" (dig "enabled" true $metrics) "port" (int (dig "port" 9400 $metrics))) -}}
{{- end -}}

{{- define "llmlaunch.storageEnabled" -}}
{{- if or .Values.storage.claim .Values.storage.size }}true{{ end -}}
{{- end -}}

{{- define "llmlaunch.procsPerNode" -}}
{{- max 1 (int .Values.gpusPerNode) -}}
{{- end -}}

{{/* The container command (JSON list): torchrun with c10d rendezvous, as launcher/spec/torchrun.py. */}}
{{- define "llmlaunch.command" -}}
{{- $v := .Values -}}
{{- $cmd := list -}}
{{- if and (eq $v.api "trainjob") (include "llmlaunch.storageEnabled" .) -}}
{{- /* A TrainJob cannot set workingDir; coreutils' env changes directory without a shell. */ -}}
{{- $cmd = list "env" (printf "--chdir=%s" $v.storage.mountPath) -}}
{{- end -}}
{{- $nnodes := printf "%d" (int $v.nodes) -}}
{{- /* train.run.max_restarts; 3 is TrainConfig's default, for a hand-written trainYaml without it */ -}}
{{- $maxRestarts := int (dig "run" "max_restarts" (int (include "llmlaunch.const.defaultMaxRestarts" .)) (fromYaml $v.config.trainYaml)) -}}
{{- if $v.elastic -}}
{{- $nnodes = printf "%d:%d" (int $v.elastic.minNodes) (int $v.elastic.maxNodes) -}}
{{- $maxRestarts = int (dig "maxRestarts" (int (include "llmlaunch.const.defaultElasticMaxRestarts" .)) $v.elastic) -}}
{{- end -}}
{{- $cmd = concat $cmd (list "torchrun" (printf "--nnodes=%s" $nnodes) (printf "--nproc-per-node=%s" (include "llmlaunch.procsPerNode" .)) "--rdzv-backend=c10d") -}}
{{- if not $v.elastic -}}
{{- $endpoint := ternary "$(PET_MASTER_ADDR):$(PET_MASTER_PORT)" "$(MASTER_ADDR):$(MASTER_PORT)" (eq $v.api "trainjob") -}}
{{- $cmd = append $cmd (printf "--rdzv-endpoint=%s" $endpoint) -}}
{{- end -}}
{{- $cmd = concat $cmd (list (printf "--max-restarts=%d" $maxRestarts) "-m" "trainer" "--config" (include "llmlaunch.const.configPath" .)) -}}
{{- toJson $cmd -}}
{{- end -}}

{{/* Environment (JSON list): fixed variables, NCCL_*, env (each in name order), the namespace, then secretKeyRefs. */}}
{{- define "llmlaunch.env" -}}
{{- $v := .Values -}}
{{- $env := list (dict "name" "LLMLAUNCH_JOB" "value" (include "llmlaunch.name" .)) (dict "name" "HOME" "value" "/tmp") (dict "name" "PYTHONUNBUFFERED" "value" "1") -}}
{{- /* torchrun agents: restartable rendezvous, and the grace period for the emergency checkpoint (launcher/spec/torchrun.py agent_env) */ -}}
{{- $env = append $env (dict "name" "TORCH_DISABLE_SHARE_RDZV_TCP_STORE" "value" "1") -}}
{{- $env = append $env (dict "name" "TORCH_ELASTIC_SHUTDOWN_TIMEOUT" "value" (printf "%d" (int $v.terminationGracePeriodSeconds))) -}}
{{- range $map := list ($v.network.nccl | default dict) ($v.env | default dict) -}}
{{- range $key := keys $map | sortAlpha -}}
{{- $env = append $env (dict "name" $key "value" (toString (get $map $key))) -}}
{{- end -}}
{{- end -}}
{{- $env = append $env (dict "name" "LLMLAUNCH_NAMESPACE" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.namespace"))) -}}
{{- range $s := $v.secrets -}}
{{- $ref := dict "name" $s.secret "key" $s.key "optional" ($s.optional | default false) -}}
{{- $env = append $env (dict "name" $s.env "valueFrom" (dict "secretKeyRef" $ref)) -}}
{{- end -}}
{{- toJson $env -}}
{{- end -}}

{{/* Requests and limits (JSON); GPUs and RDMA devices are requested = limited. */}}
{{- define "llmlaunch.resources" -}}
{{- $r := .Values.resources -}}
{{- $requests := dict -}}
{{- $limits := dict -}}
{{- if $r.cpu }}{{ $_ := set $requests "cpu" (toString $r.cpu) }}{{ end -}}
{{- if $r.memory }}{{ $_ := set $requests "memory" (toString $r.memory) }}{{ end -}}
{{- if $r.ephemeralStorage }}{{ $_ := set $requests "ephemeral-storage" (toString $r.ephemeralStorage) }}{{ end -}}
{{- if $r.cpuLimit }}{{ $_ := set $limits "cpu" (toString $r.cpuLimit) }}{{ end -}}
{{- with ($r.memoryLimit | default $r.memory) }}{{ $_ := set $limits "memory" (toString .) }}{{ end -}}
{{- if gt (int .Values.gpusPerNode) 0 -}}
{{- $_ := set $requests ($r.gpuResource | default "nvidia.com/gpu") (int .Values.gpusPerNode) -}}
{{- $_ = set $limits ($r.gpuResource | default "nvidia.com/gpu") (int .Values.gpusPerNode) -}}
{{- end -}}
{{- with .Values.network.rdma -}}
{{- $_ := set $requests (.resource | default "rdma/ib") (int (.count | default 1)) -}}
{{- $_ = set $limits (.resource | default "rdma/ib") (int (.count | default 1)) -}}
{{- end -}}
{{- $out := dict -}}
{{- if $requests }}{{ $_ := set $out "requests" $requests }}{{ end -}}
{{- if $limits }}{{ $_ := set $out "limits" $limits }}{{ end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Capabilities added to the dropped-ALL set: the user's, plus IPC_LOCK for RDMA memory pinning. */}}
{{- define "llmlaunch.capabilities" -}}
{{- $add := .Values.security.addCapabilities | default list -}}
{{- if and .Values.network.rdma (not (has "IPC_LOCK" $add)) -}}
{{- $add = append $add "IPC_LOCK" -}}
{{- end -}}
{{- toJson $add -}}
{{- end -}}

{{/* Volumes with their mounts (JSON list): config (read-only), scratch /tmp, /dev/shm, the data claim. */}}
{{- define "llmlaunch.volumes" -}}
{{- $v := .Values -}}
{{- $name := include "llmlaunch.name" . -}}
{{- $out := list (dict "name" "config" "source" (dict "configMap" (dict "name" (printf "%s-config" $name))) "path" (include "llmlaunch.const.configDir" .) "readOnly" true) -}}
{{- $out = append $out (dict "name" "scratch" "source" (dict "emptyDir" dict) "path" "/tmp") -}}
{{- with $v.resources.shmSize -}}
{{- $out = append $out (dict "name" "shm" "source" (dict "emptyDir" (dict "medium" "Memory" "sizeLimit" (toString .))) "path" "/dev/shm") -}}
{{- end -}}
{{- if include "llmlaunch.storageEnabled" . -}}
{{- $claim := $v.storage.claim | default (printf "%s-data" $name) -}}
{{- $out = append $out (dict "name" "data" "source" (dict "persistentVolumeClaim" (dict "claimName" $claim)) "path" $v.storage.mountPath) -}}
{{- end -}}
{{- if eq $v.api "trainjob" -}}
{{- /* A runtime patch cannot set automountServiceAccountToken: a mount at the token's path keeps it out (pod_values.SA_TOKEN_DIR). */ -}}
{{- $out = append $out (dict "name" "no-sa-token" "source" (dict "emptyDir" dict) "path" "/var/run/secrets/kubernetes.io/serviceaccount" "readOnly" true) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
