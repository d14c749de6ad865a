"""The Kubernetes manifests of config/kubernetes/ (issue 20), checked offline,
without a cluster.

What is used and what it catches:
- python3-yaml: every file parses; each document has apiVersion, kind and
  metadata.name.
- python3-kubernetes (Debian 12: the 22.6 client, API 1.22 models): each
  built-in object is deserialized into its model (V1StatefulSet, V1Service,
  V1PodDisruptionBudget, ...) with client-side validation, which refuses a
  missing required field (a port without `port`, a container without
  `name`) and some enum values; the model is serialized again and every key
  of the file that did not survive the round trip is reported: a misspelt
  or misplaced field (`readOnlyRootFS`, `livenessProbe` under `spec`) is
  silently dropped by a real API server's older clients and by
  `kubectl apply` without validation, so the round trip is what finds it.
  Fields newer than the 1.22 models are listed in NEWER_THAN_MODELS with
  the release that added them and are the only ones allowed to vanish.
- `kubectl kustomize` (any kubectl, e.g. Debian's kubernetes-client;
  offline, unlike `kubectl apply --dry-run=client`, which needs an API
  server for its discovery): the kustomization builds, every resource
  file it names exists (scripts/deps --test installs kubectl).
- The real binary: `mailhop check` with the container's MAILHOP_*
  environment ($(VAR) substituted as the kubelet does, the Secret's mount
  replaced by a temporary directory) accepts the configuration, so every
  variable names a real key with a valid value.
- The issue's requirements, one by one (parallel pods, a claim template,
  non-root, read-only root, no capabilities, resources, probes on
  /healthz and /readyz of the metrics port, a preStop drain whose timeout
  plus shutdown_timeout fits terminationGracePeriodSeconds, secrets as
  *_FILE mounts, selectors that match the pods, the PDB, the two load
  balancer variants, the ServiceMonitor's port).
What it cannot catch: admission policies, the cloud's annotations, CRD
schemas (the ServiceMonitor is checked by hand), scheduling."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import BIN, clean_env

kubernetes = pytest.importorskip(
    "kubernetes", reason="python3-kubernetes is not installed "
    "(apt-get install python3-kubernetes)")
from kubernetes.client import ApiClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "config" / "kubernetes"

# Built-in kinds and their python3-kubernetes models.
MODELS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "Service"): "V1Service",
    ("v1", "Secret"): "V1Secret",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
}
# Fields the 1.22 models do not know, with the release that added them.
NEWER_THAN_MODELS = {
    "spec.persistentVolumeClaimRetentionPolicy": "1.23 (beta 1.27, GA 1.32)",
    "spec.persistentVolumeClaimRetentionPolicy.whenDeleted": "1.23",
    "spec.persistentVolumeClaimRetentionPolicy.whenScaled": "1.23",
}


def documents():
    out = []
    for f in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc is not None:
                out.append((f.name, doc))
    return out


def objects():
    return [(f, d) for f, d in documents()
            if d.get("kind") != "Kustomization"]


def one(kind, name=None, file=None):
    found = [d for f, d in objects() if d["kind"] == kind and
             (name is None or d["metadata"]["name"] == name) and
             (file is None or f == file)]
    assert len(found) == 1, (kind, name, file, len(found))
    return found[0]


def dropped(orig, back, path=""):
    """Paths of keys in orig that the round trip lost."""
    out = []
    if isinstance(orig, dict):
        for k, v in orig.items():
            p = f"{path}.{k}" if path else k
            if not isinstance(back, dict) or k not in back:
                out.append(p)
            else:
                out += dropped(v, back[k], p)
    elif isinstance(orig, list) and isinstance(back, list):
        for i, (a, b) in enumerate(zip(orig, back)):
            out += dropped(a, b, f"{path}[{i}]")
    return out


def test_every_file_parses_and_names_its_objects():
    docs = documents()
    assert len(docs) >= 9
    for f, d in docs:
        assert isinstance(d, dict), f
        assert d.get("apiVersion") and d.get("kind"), f
        if d["kind"] != "Kustomization":
            assert d.get("metadata", {}).get("name"), f
            if d["kind"] != "Namespace":
                assert d["metadata"].get("namespace") == "mailhop", f


def test_built_in_objects_match_the_kubernetes_models():
    client = ApiClient()
    checked = 0
    for f, d in objects():
        model = MODELS.get((d["apiVersion"], d["kind"]))
        if model is None:
            continue
        # Client-side validation: required fields, some enums.
        obj = client._ApiClient__deserialize(d, model)
        back = client.sanitize_for_serialization(obj)
        lost = [p for p in dropped(d, back) if p not in NEWER_THAN_MODELS]
        assert not lost, f"{f}: fields unknown to the {model} model: {lost}"
        checked += 1
    assert checked >= 7


def test_the_round_trip_catches_a_misspelt_field():
    """The check above is not vacuous: a typo'd field is found."""
    client = ApiClient()
    d = one("StatefulSet")
    c = d["spec"]["template"]["spec"]["containers"][0]
    bad = yaml.safe_load(yaml.safe_dump(d))
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFS"] = True
    bad["spec"]["template"]["spec"]["livenessProbe"] = c["livenessProbe"]
    back = client.sanitize_for_serialization(
        client._ApiClient__deserialize(bad, "V1StatefulSet"))
    lost = dropped(bad, back)
    assert "spec.template.spec.containers[0].securityContext." \
        "readOnlyRootFS" in lost
    assert "spec.template.spec.livenessProbe" in lost
    with pytest.raises(ValueError):
        client._ApiClient__deserialize(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
             "spec": {"ports": [{"name": "smtp"}]}}, "V1Service")


def test_kustomization_builds_offline():
    kubectl = shutil.which("kubectl")
    assert kubectl, "no kubectl: scripts/deps --test installs kubernetes-client"
    r = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    built = [d for d in yaml.safe_load_all(r.stdout) if d]
    kinds = sorted(d["kind"] for d in built)
    assert kinds == sorted(["Namespace", "StatefulSet", "Service", "Service",
                            "PodDisruptionBudget", "ServiceMonitor"]), kinds
    # The LB in the kustomization is the Local one, not the PROXY variant.
    lb = [d for d in built if d["kind"] == "Service" and
          d["spec"].get("type") == "LoadBalancer"]
    assert lb[0]["spec"]["externalTrafficPolicy"] == "Local"


def container():
    sts = one("StatefulSet")
    return sts, sts["spec"]["template"]["spec"], \
        sts["spec"]["template"]["spec"]["containers"][0]


def env_of(c):
    return {e["name"]: e.get("value") for e in c["env"]}


def seconds(d):
    m = re.fullmatch(r"(\d+)([smh]?)", d)
    assert m, d
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def test_statefulset_shape():
    sts, pod, c = container()
    spec = sts["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["replicas"] >= 2
    vct = spec["volumeClaimTemplates"]
    assert len(vct) == 1 and vct[0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert {"name": vct[0]["metadata"]["name"],
            "mountPath": "/var/lib/mailhop"} in c["volumeMounts"]
    assert env_of(c)["MAILHOP_QUEUE_PATH"].startswith("/var/lib/mailhop/")
    # Non-root, read-only root, no capabilities, no escalation.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in sc["capabilities"]
    assert c["resources"]["requests"]["cpu"] and \
        c["resources"]["requests"]["memory"] and \
        c["resources"]["limits"]["memory"]
    # Topology spread over zones and nodes, for these pods.
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    labels = spec["template"]["metadata"]["labels"]
    for t in pod["topologySpreadConstraints"]:
        assert t["labelSelector"]["matchLabels"].items() <= labels.items()
    assert spec["selector"]["matchLabels"].items() <= labels.items()


def test_probes_follow_healthz_and_readyz_on_the_metrics_port():
    _, _, c = container()
    env = env_of(c)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert env["MAILHOP_METRICS_LISTEN"].endswith(f":{ports['metrics']}")
    assert env["MAILHOP_LISTEN"].endswith(f":{ports['smtp']}")
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz",
                                             "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz",
                                              "port": "metrics"}


def test_prestop_drains_to_the_peers_within_the_grace_period():
    sts, pod, c = container()
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[:2] == ["mailhop", "drain"], cmd
    to = cmd[cmd.index("--to") + 1]
    timeout = seconds(cmd[cmd.index("--timeout") + 1])
    shutdown = seconds(env_of(c)["MAILHOP_SHUTDOWN_TIMEOUT"])
    # The drain, then SIGTERM's shutdown_timeout, inside the grace period.
    assert timeout + shutdown < pod["terminationGracePeriodSeconds"]
    # --to is the headless Service of the StatefulSet, on its SMTP port.
    host, port = to.rsplit(":", 1)
    peers = one("Service", sts["spec"]["serviceName"])
    assert peers["spec"]["clusterIP"] == "None"
    assert host == f"{peers['metadata']['name']}.mailhop.svc.cluster.local"
    assert int(port) in [p["port"] for p in peers["spec"]["ports"]
                         if p["name"] == "smtp"]
    # Not-ready (draining) pods leave its DNS answer.
    assert peers["spec"].get("publishNotReadyAddresses", False) is False


def test_services_pdb_and_monitor_select_the_pods():
    sts, _, c = container()
    labels = sts["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in c["ports"]}
    for f, d in objects():
        if d["kind"] == "Service":
            assert d["spec"]["selector"].items() <= labels.items(), f
            for p in d["spec"]["ports"]:
                assert p["targetPort"] in port_names, (f, p)
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    local = one("Service", file="service-lb.yaml")
    assert local["spec"]["type"] == "LoadBalancer"
    assert local["spec"]["externalTrafficPolicy"] == "Local"
    proxy = one("Service", file="service-lb-proxy.yaml")
    assert proxy["spec"]["type"] == "LoadBalancer"
    assert any("proxy-protocol" in k
               for k in proxy["metadata"]["annotations"])
    # The metrics port is never on a load balancer.
    for lb in (local, proxy):
        assert "metrics" not in [p["targetPort"] for p in lb["spec"]["ports"]]
    sm = one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    peers = one("Service", "mailhop-peers")
    assert sm["spec"]["selector"]["matchLabels"].items() <= \
        peers["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in \
        [p["name"] for p in peers["spec"]["ports"]]
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"


def test_secrets_are_file_mounts():
    _, pod, c = container()
    secret = one("Secret")
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    files = [(k, v) for k, v in env_of(c).items() if k.endswith("_FILE")]
    assert files, "no *_FILE variable"
    for name, path in files:
        d, key = os.path.split(path)
        assert d in mounts, (name, path)
        v = vols[mounts[d]["name"]]
        assert v["secret"]["secretName"] == secret["metadata"]["name"]
        assert mounts[d]["readOnly"] is True
        assert key in secret["stringData"]
    # Nothing secret as a plain value.
    for k in env_of(c):
        assert "PASSWORD" not in k or k.endswith("_FILE"), k


def test_mailhop_check_accepts_the_container_environment(tmp_path):
    _, pod, c = container()
    raw = {e["name"]: e.get("value") for e in c["env"]}
    # fieldRef values, as the kubelet would fill them in.
    env = {k: (v if v is not None else "mailhop-0") for k, v in raw.items()}
    env = {k: re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], v)
           for k, v in env.items()}
    secret = one("Secret")
    for mount in c["volumeMounts"]:
        if mount.get("readOnly"):
            d = tmp_path / mount["name"]
            d.mkdir()
            for k, v in secret["stringData"].items():
                (d / k).write_text(v + "\n")
            for k in env:
                if env[k].startswith(mount["mountPath"] + "/"):
                    env[k] = str(d) + env[k][len(mount["mountPath"]):]
    r = subprocess.run([BIN, "check"], capture_output=True, text=True,
                       env=clean_env(env), timeout=30)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr.lower(), r.stderr
    out = r.stdout
    assert "hostname = mailhop-0.mailhop-peers.mailhop.svc.cluster.local" \
        in out
    assert "received_header = redacted" in out
    assert "relayhost_password_file = " in out
