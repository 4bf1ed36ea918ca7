"""What a NetworkPolicy lets through, by the rules of networking.k8s.io/v1 (the API reference's
semantics, as every conforming network plugin applies them), so tests can ask questions such as
"may a pod in namespace x with labels y reach port 29500?" instead of comparing YAML.

Peers are pods (namespace, namespace labels, pod labels, IP) or plain IP addresses outside the cluster.
Only matchLabels selectors are modelled: llmlaunch writes no matchExpressions.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict = field(default_factory=dict)
    namespace_labels: dict = field(default_factory=dict)
    ip: str = "10.0.0.10"


def _selects(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector; an empty one ({} or matchLabels: {}) selects everything."""
    assert not (selector or {}).get("matchExpressions"), "matchExpressions are not modelled"
    wanted = (selector or {}).get("matchLabels") or {}
    return all(labels.get(key) == value for key, value in wanted.items())


def _in_block(block: dict, ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    network = ipaddress.ip_network(block["cidr"])
    if address.version != network.version or address not in network:
        return False
    return not any(address in ipaddress.ip_network(e) for e in block.get("except", [])
                   if ipaddress.ip_network(e).version == address.version)


def _peer_matches(peer: dict, policy_namespace: str, other: Pod | str) -> bool:
    if "ipBlock" in peer:
        return _in_block(peer["ipBlock"], other.ip if isinstance(other, Pod) else other)
    if not isinstance(other, Pod):
        return False  # pod and namespace selectors only ever match pods
    if "namespaceSelector" in peer:
        namespace_ok = _selects(peer["namespaceSelector"], {**other.namespace_labels,
                                                             "kubernetes.io/metadata.name": other.namespace})
    else:
        namespace_ok = other.namespace == policy_namespace  # a podSelector alone: the policy's namespace
    return namespace_ok and _selects(peer.get("podSelector"), other.labels)


def _port_matches(ports: list[dict] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True  # no ports: every port
    return any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def _allowed(policy: dict, direction: str, other: Pod | str, port: int, protocol: str) -> bool:
    spec = policy["spec"]
    types = spec.get("policyTypes", ["Ingress"])
    kind, peers_key = ("Ingress", "from") if direction == "ingress" else ("Egress", "to")
    if kind not in types:
        return True  # this policy does not isolate that direction
    namespace = policy["metadata"]["namespace"]
    for rule in spec.get(direction) or []:
        peers = rule.get(peers_key)
        if (not peers or any(_peer_matches(p, namespace, other) for p in peers)) and \
                _port_matches(rule.get("ports"), port, protocol):
            return True
    return False


def selects(policy: dict, pod: Pod) -> bool:
    return pod.namespace == policy["metadata"]["namespace"] and _selects(policy["spec"]["podSelector"], pod.labels)


def ingress_allowed(policy: dict, source: Pod | str, port: int, protocol: str = "TCP") -> bool:
    """May `source` open a connection to `port` of a pod this policy selects?"""
    return _allowed(policy, "ingress", source, port, protocol)


def egress_allowed(policy: dict, destination: Pod | str, port: int, protocol: str = "TCP") -> bool:
    """May a pod this policy selects open a connection to `port` of `destination`?"""
    return _allowed(policy, "egress", destination, port, protocol)
