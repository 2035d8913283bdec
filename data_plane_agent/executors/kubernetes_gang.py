"""Gangs on the Kubernetes executor: one attempt of a `@task(replicas=N)` is N pods and a
headless Service, created together. Pure functions over plain dicts, like `kubernetes_pods`.

Rank 0's pod is the attempt's own pod (`kubernetes_pods.pod_name`): the executor watches,
judges, logs and stops it as for a single pod, and its result is the task's. The workers of
ranks 1..N-1 are `<pod>-w<k>`, carrying the gang's label instead of the attempt's (so nothing
takes them for the attempt itself), and run the runtime with `--discard-outputs` (only rank 0
writes outputs and its checkpoint). The headless Service `<pod>` selects the gang's pods, and
each pod is `rank-<k>` in its subdomain, so rank 0 is reachable at `rank-0.<service>`: every
pod's `MASTER_ADDR`. Each pod is a node of its own: `NODE_RANK` = `RANK`, `LOCAL_RANK` 0.
"""

from __future__ import annotations

import copy
from typing import Any

from data_plane_agent.executors import kubernetes_pods as pods

GANG_LABEL = "fleetflow.dev/gang"
"""On every pod of a gang and the Service's selector: the name of its rank 0's pod."""
RANK_LABEL = "fleetflow.dev/rank"
MASTER_PORT = 29500
"""The port rank 0 listens on for the rendezvous (torch's default)."""


def worker_pod_name(rank0: str, rank: int) -> str:
    """The pod of rank `rank` > 0 of the gang whose rank 0's pod is `rank0`."""
    return f"{rank0}-w{rank}"


def gang_pod_names(rank0: str, replicas: int) -> list[str]:
    """Every pod of the gang but rank 0's."""
    return [worker_pod_name(rank0, rank) for rank in range(1, replicas)]


def rank_of(pod: dict[str, Any]) -> tuple[str, int] | None:
    """(rank 0's pod name, rank) of a gang's worker pod; None for any other pod."""
    labels = pod.get("metadata", {}).get("labels") or {}
    gang, rank = labels.get(GANG_LABEL), labels.get(RANK_LABEL, "")
    if not gang or not rank.isdigit() or rank == "0":
        return None
    return gang, int(rank)


def rank_environment(service: str, rank: int, world_size: int) -> list[dict[str, str]]:
    return [
        {"name": "MASTER_ADDR", "value": f"rank-0.{service}"},
        {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
        {"name": "WORLD_SIZE", "value": str(world_size)},
        {"name": "RANK", "value": str(rank)},
        {"name": "LOCAL_RANK", "value": "0"},
        {"name": "LOCAL_WORLD_SIZE", "value": "1"},
        {"name": "NODE_RANK", "value": str(rank)},
    ]


def gang_pod_manifests(rank0: dict[str, Any], replicas: int) -> list[dict[str, Any]]:
    """The pods of a gang, rank 0's first, from the attempt's own pod (`pod_manifest`)."""
    service = rank0["metadata"]["name"]
    manifests = []
    for rank in range(replicas):
        manifest = copy.deepcopy(rank0)
        metadata, spec = manifest["metadata"], manifest["spec"]
        labels = metadata["labels"]
        labels[GANG_LABEL] = service
        labels[RANK_LABEL] = str(rank)
        spec["hostname"] = f"rank-{rank}"
        spec["subdomain"] = service
        container = spec["containers"][0]
        container["env"] = [*container["env"], *rank_environment(service, rank, replicas)]
        if rank > 0:
            metadata["name"] = worker_pod_name(service, rank)
            del labels[pods.ATTEMPT_LABEL]  # not the attempt's pod: never judged as it
            metadata["annotations"] = {
                k: v for k, v in metadata["annotations"].items() if k != pods.ASSIGNMENT_ANNOTATION
            }
            command = container["command"]
            if "--checkpoint-uri" in command:  # rank 0 keeps the unit's checkpoint
                at = command.index("--checkpoint-uri")
                del command[at : at + 2]
            container["command"] = [*command, "--discard-outputs"]
        manifests.append(manifest)
    return manifests


def service_manifest(rank0: dict[str, Any]) -> dict[str, Any]:
    """The headless Service that gives the gang's pods their DNS names (`rank-<k>.<service>`),
    published before they are ready so the workers can find rank 0 while it starts."""
    metadata = rank0["metadata"]
    labels = {
        key: value
        for key, value in metadata["labels"].items()
        if key in (pods.MANAGED_BY_LABEL, pods.AGENT_LABEL, pods.ATTEMPT_LABEL, pods.TENANT_LABEL)
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "labels": {**labels, GANG_LABEL: metadata["name"]},
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {GANG_LABEL: metadata["name"]},
            "ports": [{"name": "rendezvous", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
        },
    }
