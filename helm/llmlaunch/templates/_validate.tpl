{{/*
The rules values.schema.json cannot express, checked before anything renders (the same rules
ClusterSpec applies to a job file). Each message names the value to change.
*/}}
{{- define "llmlaunch.validate" -}}
{{- $v := .Values -}}
{{- $name := include "llmlaunch.name" . -}}
{{- $storage := $v.storage -}}
{{- if not $v.image -}}
{{- fail "image is not set: build the trainer image from the repository's Dockerfile, push it (docs/cluster.md) and set image (--set image=REGISTRY/llmlaunch-trainer:0.1.0)" -}}
{{- end -}}
{{- if and $storage.claim $storage.size -}}
{{- fail "storage: set storage.claim (an existing PVC) or storage.size (a new PVC), not both" -}}
{{- end -}}
{{- if and $storage.storageClass (not $storage.size) -}}
{{- fail "storage.storageClass only applies to a created PVC (set storage.size)" -}}
{{- end -}}
{{- if and $storage.keep (not $storage.size) -}}
{{- fail "storage.keep only applies to a created PVC (set storage.size); an existing claim is never deleted" -}}
{{- end -}}
{{- $maxNodes := int $v.nodes -}}
{{- with $v.elastic -}}
{{- $maxNodes = int .maxNodes -}}
{{- if or (lt (int $v.nodes) (int .minNodes)) (gt (int $v.nodes) (int .maxNodes)) -}}
{{- fail (printf "nodes %d must lie within elastic.minNodes %d and elastic.maxNodes %d" (int $v.nodes) (int .minNodes) (int .maxNodes)) -}}
{{- end -}}
{{- end -}}
{{- if and (include "llmlaunch.storageEnabled" .) (ne $storage.accessMode "ReadWriteMany") (gt $maxNodes 1) -}}
{{- fail (printf "storage.accessMode %s cannot be shared by %d pods on different nodes; use ReadWriteMany" $storage.accessMode $maxNodes) -}}
{{- end -}}
{{- if eq $v.api "trainjob" -}}
{{- /* what a Trainer v2.3 runtime patch cannot reach (launcher/spec/cluster_spec.py TRAINJOB_UNSUPPORTED) */ -}}
{{- $unsupported := dict "scheduling.priorityClass" $v.scheduling.priorityClass "scheduling.schedulerName" $v.scheduling.schedulerName "elastic" $v.elastic -}}
{{- range $key := keys $unsupported | sortAlpha -}}
{{- if get $unsupported $key -}}
{{- fail (printf "%s cannot be set with api trainjob (a TrainJob takes it from its ClusterTrainingRuntime %q); use api pytorchjob" $key $v.runtime) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $metrics := include "llmlaunch.metrics" . | fromJson -}}
{{- if and $metrics.enabled (has (int $metrics.port) (list (int (include "llmlaunch.const.pytorchjobPort" .)) (int (include "llmlaunch.const.trainjobPort" .)))) -}}
{{- fail (printf "config.trainYaml: metrics.port %d is a rendezvous port of the training operators; choose another" (int $metrics.port)) -}}
{{- end -}}
{{- include "llmlaunch.validateDsConfig" . -}}
{{- end -}}

{{/*
ds_config.json was computed by `llmlaunch values` for one topology. DeepSpeed asserts
train_batch_size = micro batch x accumulation x world size at start-up; check it here, so a
changed nodes / gpusPerNode fails at install time instead of in every pod.
*/}}
{{- define "llmlaunch.validateDsConfig" -}}
{{- $v := .Values -}}
{{- $ds := fromJson $v.config.dsConfigJson -}}
{{- if or (not (kindIs "map" $ds)) (hasKey $ds "Error") -}}
{{- fail "config.dsConfigJson: not a JSON object; write it with llmlaunch values" -}}
{{- end -}}
{{- $procs := int (include "llmlaunch.procsPerNode" .) -}}
{{- $world := mul (int $v.nodes) $procs -}}
{{- $hint := "run llmlaunch values again with the new --nodes / --gpus-per-node / elastic settings" -}}
{{- if hasKey $ds "train_batch_size" -}}
{{- if $v.elastic -}}
{{- fail (printf "config.dsConfigJson fixes train_batch_size, which an elastic job cannot (its world size changes): %s" $hint) -}}
{{- end -}}
{{- $perRank := mul (int (get $ds "train_micro_batch_size_per_gpu")) (int (get $ds "gradient_accumulation_steps")) -}}
{{- $tbs := int (get $ds "train_batch_size") -}}
{{- if and (gt $perRank 0) (ne $tbs (mul $perRank $world)) -}}
{{- fail (printf "config.dsConfigJson was computed for a world size of %d (train_batch_size %d), but nodes %d x %d processes per node = %d: %s" (div $tbs $perRank) $tbs (int $v.nodes) $procs $world $hint) -}}
{{- end -}}
{{- end -}}
{{- if eq (int $v.gpusPerNode) 0 -}}
{{- range $section := list "bf16" "fp16" -}}
{{- $part := get $ds $section -}}
{{- if and (kindIs "map" $part) (eq (toString (get $part "enabled")) "true") -}}
{{- fail (printf "config.dsConfigJson enables %s, which CPU pods (gpusPerNode 0) cannot run: %s" $section $hint) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
