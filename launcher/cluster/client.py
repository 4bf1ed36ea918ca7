"""Talking to the Kubernetes API through the `kubernetes` client (imported here, lazily).

One generic request path for core objects and custom resources alike, so every call shares the
same error translation: a failure becomes a KubeError whose text is one line naming the object
and the server's reason.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

TIMEOUT = (5, 30)  # (connect, read) seconds for ordinary calls
LIST_PAGE = 500  # objects per list request: kubectl's --chunk-size default


@dataclass(frozen=True)
class Kind:
    kind: str
    group: str
    version: str
    plural: str
    install_hint: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        ns = f"/namespaces/{quote(namespace, safe='')}" if namespace else ""
        return f"{base}{ns}/{self.plural}" + (f"/{quote(name, safe='')}" if name else "")


KINDS = {k.kind: k for k in (
    Kind("ConfigMap", "", "v1", "configmaps"),
    Kind("PersistentVolumeClaim", "", "v1", "persistentvolumeclaims"),
    Kind("Pod", "", "v1", "pods"),
    Kind("Event", "", "v1", "events"),
    Kind("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies"),
    Kind("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets",
         "Kubernetes serves it from 1.5 on (policy/v1 from 1.21); or set cluster.disruption_budget: false"),
    Kind("PodMonitor", "monitoring.coreos.com", "v1", "podmonitors",
         "install the Prometheus operator (kube-prometheus-stack), or set cluster.monitoring.pod_monitor: false"),
    Kind("PyTorchJob", "kubeflow.org", "v1", "pytorchjobs",
         "install the Kubeflow training operator (kubectl apply --server-side -k "
         "\"github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.2\")"),
    Kind("TrainJob", "trainer.kubeflow.org", "v1alpha1", "trainjobs",
         "install Kubeflow Trainer v2.3 and its torch-distributed runtime, or set cluster.api: pytorchjob"),
)}
JOB_KINDS = (KINDS["PyTorchJob"], KINDS["TrainJob"])

# Kinds render writes in a version older servers lack, and the older version with the same fields: policy/v1
# PodDisruptionBudget came with Kubernetes 1.21 (the tests' apiserver is 1.20); policy/v1beta1 has the same
# minAvailable and selector, so submit sends the rendered object unchanged but for its apiVersion.
OLDER_VERSIONS = {"PodDisruptionBudget": "v1beta1"}


def served_kind(kind: Kind, discovered: Mapping[str, list[str]]) -> Kind:
    """`kind`, or its older version (OLDER_VERSIONS) when the server's discovery (group/version -> the
    resource names it serves) lists that one and not `kind` itself. Otherwise `kind`, and the server's
    own error names what it lacks."""
    older = OLDER_VERSIONS.get(kind.kind)
    if older is None or kind.plural in discovered.get(kind.api_version, []):
        return kind
    fallback = dataclasses.replace(kind, version=older)
    return fallback if kind.plural in discovered.get(fallback.api_version, []) else kind


class KubeError(Exception):
    """An API or connection failure; str() is the one line a user sees."""

    def __init__(self, message: str, status: int = 0, reason: str = "", details_kind: str = ""):
        super().__init__(message)
        self.status, self.reason, self.details_kind = status, reason, details_kind


class _ContinueExpired(Exception):
    """A continued list page came back 410 Gone: its snapshot is gone, only a fresh list can go on."""

    def __init__(self, error: KubeError):
        super().__init__(str(error))
        self.error = error


def kubeconfig_path(explicit: str | None) -> str:
    return explicit or os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


class Cluster:
    """A connection to one cluster (kubeconfig + context), with the namespace that context names."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None):
        from kubernetes.client.api_client import ApiClient
        from kubernetes.client.configuration import Configuration
        from kubernetes.config import ConfigException, incluster_config, kube_config

        config = Configuration()
        path = kubeconfig_path(kubeconfig)
        self.namespace = "default"
        try:
            if not kubeconfig and not any(Path(p).expanduser().is_file() for p in path.split(os.pathsep) if p) \
                    and os.environ.get("KUBERNETES_SERVICE_HOST"):
                incluster_config.load_incluster_config(client_configuration=config)
            else:
                if not any(Path(p).expanduser().is_file() for p in path.split(os.pathsep) if p):
                    raise KubeError(f"no kubeconfig at {path}: set KUBECONFIG or pass --kubeconfig")
                kube_config.load_kube_config(config_file=path, context=context, client_configuration=config,
                                             persist_config=False)
                contexts, current = kube_config.list_kube_config_contexts(path)
                chosen = next((c for c in contexts if c["name"] == context), current) if context else current
                self.namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
        except ConfigException as e:
            raise KubeError(f"kubeconfig {path}: {e}") from e
        config.retries = 1
        if not config.verify_ssl:
            # The kubeconfig asks for insecure-skip-tls-verify; like kubectl, do not warn on every request.
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.host = config.host
        self.api = ApiClient(config)
        self._served: dict[str, Kind] = {}

    # -- raw requests ---------------------------------------------------------------------------

    def request(self, method: str, path: str, query: dict | None = None, body: Any = None,
                content_type: str = "application/json", stream: bool = False, timeout=TIMEOUT,
                accept: str = "application/json"):
        """One API call; returns the decoded JSON (the text when `accept` asks for another type, the raw
        response when stream=True)."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        url_path = path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        _, url, headers, body, _ = self.api.param_serialize(method, url_path, header_params=headers, body=body,
                                                            auth_settings=["BearerToken"])
        try:
            response = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
        except (urllib3.exceptions.HTTPError, ApiException, OSError) as e:
            raise KubeError(f"cannot reach the cluster at {self.host}: {_connection_reason(e)}") from e
        if not 200 <= response.status < 300:
            raise _api_error(response.status, response.read())
        if stream:
            return response.response
        data = response.read()
        if accept != "application/json":
            return data.decode(errors="replace")
        return json.loads(data) if data else {}

    # -- objects ---------------------------------------------------------------------------------

    def resource_names(self, kind: Kind) -> list[str]:
        """The resources the server serves in `kind`'s group version (none when it serves no such version).
        Discovery is open to every user."""
        try:
            resources = self.request("GET", kind.path(None).rsplit("/", 1)[0]).get("resources", [])
        except KubeError as e:
            if e.status != 404:
                raise
            resources = []
        return [r.get("name") for r in resources]

    def served(self, kind: Kind) -> Kind:
        """`kind` in the version this server serves (served_kind); discovery is read once per kind."""
        older = OLDER_VERSIONS.get(kind.kind)
        if older is None:
            return kind
        if kind.kind not in self._served:
            candidates = (kind, dataclasses.replace(kind, version=older))
            self._served[kind.kind] = served_kind(kind, {k.api_version: self.resource_names(k) for k in candidates})
        return self._served[kind.kind]

    def missing_kinds(self, kinds: list[Kind]) -> list[Kind]:
        """Kinds whose API (a CRD) the server does not serve, in any version served() would use."""
        missing = []
        for kind in kinds:
            if not kind.group or kind.group.endswith(".k8s.io"):  # built into every server
                continue
            if kind.plural not in self.resource_names(self.served(kind)):
                missing.append(kind)
        return missing

    def create(self, obj: dict, dry_run: bool = False) -> dict:
        kind = self.served(KINDS[obj["kind"]])
        if obj["apiVersion"] != kind.api_version:
            obj = {**obj, "apiVersion": kind.api_version}  # an older version with the same fields (served_kind)
        ns = obj["metadata"]["namespace"]
        return self.request("POST", kind.path(ns), {"dryRun": "All"} if dry_run else None, obj)

    def get(self, kind: Kind, namespace: str, name: str) -> dict | None:
        kind = self.served(kind)
        try:
            return self.request("GET", kind.path(namespace, name))
        except KubeError as e:
            if e.status == 404 and e.details_kind == kind.plural:
                return None
            raise

    def list(self, kind: Kind, namespace: str | None, selector: str | None = None,
             field_selector: str | None = None, limit: int = LIST_PAGE) -> list[dict]:
        """Every object that matches, read in pages of `limit` as kubectl does (one request per page, so a
        namespace of thousands neither times out nor arrives as one huge response). A continue token that
        expired (etcd compacted the list's revision meanwhile: 410 Expired) restarts the list once."""
        kind = self.served(kind)
        query = {k: v for k, v in (("labelSelector", selector), ("fieldSelector", field_selector)) if v}
        for _ in range(2):
            try:
                return self._pages(kind, namespace, {**query, "limit": limit})
            except _ContinueExpired as e:
                expired = e.error
        where = f"namespace {namespace}" if namespace else "all namespaces"
        raise KubeError(f"cannot list {kind.plural} in {where}: it changed faster than it could be read in pages "
                        f"of {limit} (the continue token expired twice, HTTP 410 {expired.reason}); try again",
                        expired.status, expired.reason) from expired

    def _pages(self, kind: Kind, namespace: str | None, query: dict) -> list[dict]:
        items: list[dict] = []
        token = ""
        while True:
            try:
                page = self.request("GET", kind.path(namespace), {**query, "continue": token} if token else query)
            except KubeError as e:
                # Only a 410 on a continued page is the token's age; on the first page it is something else.
                if token and e.status == 410:
                    raise _ContinueExpired(e) from e
                raise
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        # Background: the operator's pods and services go with the job, through their owner references.
        self.request("DELETE", self.served(kind).path(namespace, name), body={"propagationPolicy": "Background"})

    def merge_patch(self, kind: Kind, namespace: str, name: str, patch: dict) -> dict:
        return self.request(
            "PATCH", self.served(kind).path(namespace, name), body=patch, content_type="application/merge-patch+json"
        )

    def patch_status(self, kind: Kind, namespace: str, name: str, status: dict) -> dict:
        """Write a job's status subresource (what the operator does; the tests use it in its place)."""
        return self.request("PATCH", kind.path(namespace, name) + "/status", body={"status": status},
                            content_type="application/merge-patch+json")

    def pod_proxy_get(self, namespace: str, pod: str, port: int, path: str) -> str:
        """GET http://POD:PORT/PATH through the apiserver's pod proxy (RBAC: get pods/proxy); the body as text."""
        proxied = f"{KINDS['Pod'].path(namespace, pod)}:{port}/proxy/{path.lstrip('/')}"
        return self.request("GET", proxied, accept="text/plain")

    def log_stream(self, namespace: str, pod: str, container: str, follow: bool, tail: int | None) -> Iterator[bytes]:
        query: dict[str, Any] = {"container": container, "follow": "true" if follow else "false"}
        if tail is not None:
            query["tailLines"] = tail
        response = self.request("GET", KINDS["Pod"].path(namespace, pod) + "/log", query, stream=True,
                                timeout=(5, None) if follow else TIMEOUT)
        try:
            yield from response.stream(64 * 1024)
        finally:
            response.release_conn()


def _connection_reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    # urllib3 wraps the OS error in several layers of repr; the last part is what went wrong.
    return text.rsplit(": ", 1)[-1].rstrip("')\"") if ": " in text else text


def _api_error(status: int, data: bytes) -> KubeError:
    """The server's Status object as one line: its message (which names the object) and reason."""
    try:
        body = json.loads(data)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    reason = body.get("reason") or {401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}.get(status, "Error")
    message = body.get("message") or (data.decode(errors="replace").strip()[:200] if data else "") or reason
    details_kind = (body.get("details") or {}).get("kind", "")
    hint = (
        "; the llmlaunch-user Role grants what the CLI needs (docs/cluster.md#least-privilege)" if status == 403 else ""
    )
    return KubeError(
        f"{message} ({reason}, HTTP {status}){hint}", status=status, reason=reason, details_kind=details_kind
    )
