#!/usr/bin/env python3
"""Security lint for the rendered Kubernetes manifests (`kubectl kustomize` output).

Usage: lint.py FILE...     lint every document of each multi-document YAML file
       lint.py --self-test check that each rule catches a broken copy of k8s/base

For every container (init and native-sidecar containers included): runAsNonRoot,
readOnlyRootFilesystem, allowPrivilegeEscalation: false, capabilities drop ALL (and add
nothing), not privileged, CPU and memory requests and limits, an image with a tag or
digest that is not `latest`. For every pod: no host namespaces, no service-account token.
The hopauth container's liveness probe must GET /healthz and its readiness probe /readyz.
Custom resources listed in CRD_SCHEMAS are validated against the schema vendored in
k8s/schemas/ (kubernetes-validate ships schemas for built-in kinds only).
References inside one rendering: every ConfigMap a pod mounts or reads exists in it, every
Secret it reads exists in it or is one the docs tell the user to create (USER_SECRETS),
every Service selects the pods of some workload, every StatefulSet's serviceName is a
Service (headless when it has more than one replica), and every named port a probe uses is declared by that container.
A pod with the config-reload component's "config-reloader" container shares its process
namespace, the reloader mounts a ConfigMap that hopauth mounts too, both as a directory
(no subPath: such a mount never sees an update), under a stable name (no kustomize hash
suffix), and runs as hopauth's user (signalling it needs no capability then).
Needs PyYAML and jsonschema (both come with kubernetes-validate).
"""

import copy
import json
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
RELOADER = "config-reloader"
# The suffix kustomize's configMapGenerator appends: 10 characters of its hash alphabet.
KUSTOMIZE_HASH = re.compile(r"-[2456789bcdfghkmt]{10}$")
WORKLOADS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
# Secrets the manifests read but do not ship: the user creates them (docs/kubernetes.md).
USER_SECRETS = {"hopauth-admin", "redis-auth"}
# (apiVersion, kind) -> vendored JSON schema. Unknown custom kinds fail in validate.sh.
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "schemas/servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "schemas/prometheusrule.json",
}


def pod_spec(doc):
    spec = doc.get("spec") or {}
    kind = doc.get("kind")
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    return spec["template"]["spec"]


def is_hopauth(container):
    image = container.get("image", "").split("@")[0].rsplit(":", 1)[0]
    return container.get("name") == "hopauth" or image.endswith("/hopauth")


def image_problem(image):
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "image %r has no tag" % image
    if last.rsplit(":", 1)[1] in ("", "latest"):
        return "image %r uses the latest tag" % image
    return None


def probe_path(probe):
    return ((probe or {}).get("httpGet") or {}).get("path")


def lint_container(c, pod_sc):
    sc = c.get("securityContext") or {}
    out = []
    if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
        out.append("runAsNonRoot is not true")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
        out.append("runAsUser is 0")
    if sc.get("readOnlyRootFilesystem") is not True:
        out.append("readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append("allowPrivilegeEscalation is not false")
    if sc.get("privileged"):
        out.append("privileged")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append("capabilities do not drop ALL")
    if caps.get("add"):
        out.append("capabilities add %s" % caps["add"])
    res = c.get("resources") or {}
    for section in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if not (res.get(section) or {}).get(r):
                out.append("resources.%s.%s is not set" % (section, r))
    problem = image_problem(c.get("image", ""))
    if problem:
        out.append(problem)
    if is_hopauth(c):
        if probe_path(c.get("livenessProbe")) != "/healthz":
            out.append("hopauth livenessProbe does not GET /healthz")
        if probe_path(c.get("readinessProbe")) != "/readyz":
            out.append("hopauth readinessProbe does not GET /readyz")
    return out


def lint_doc(doc):
    """Findings for one document, each "Kind/name: message"."""
    kind = doc.get("kind")
    name = "%s/%s" % (kind, (doc.get("metadata") or {}).get("name"))
    findings = []
    schema_file = CRD_SCHEMAS.get((doc.get("apiVersion"), kind))
    if schema_file:
        import jsonschema

        with open(os.path.join(HERE, schema_file)) as f:
            schema = json.load(f)
        for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
            where = ".".join(str(p) for p in e.absolute_path) or "(root)"
            findings.append("%s: %s: %s" % (name, where, e.message))
    if kind not in WORKLOADS:
        return findings, 0
    spec = pod_spec(doc)
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            findings.append("%s: %s is set" % (name, key))
    if spec.get("automountServiceAccountToken") is not False:
        findings.append("%s: automountServiceAccountToken is not false" % name)
    pod_sc = spec.get("securityContext") or {}
    hopauth = 0
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        hopauth += is_hopauth(c)
        findings += ["%s container %s: %s" % (name, c.get("name"), m) for m in lint_container(c, pod_sc)]
    findings += ["%s: %s" % (name, m) for m in reloader_problems(spec)]
    return findings, hopauth


def probe_port_problems(c):
    """Named ports that a probe of container `c` uses but the container does not declare."""
    declared = {p.get("name") for p in c.get("ports") or []}
    out = []
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = c.get(kind) or {}
        for handler in ("httpGet", "tcpSocket", "grpc"):
            port = (probe.get(handler) or {}).get("port")
            if isinstance(port, str) and port not in declared:
                out.append("%s uses port %r, which the container does not declare" % (kind, port))
    return out


def references(docs):
    """Findings for references between the documents of one rendering."""
    names = {}
    for doc in docs:
        names.setdefault(doc.get("kind"), {})[(doc.get("metadata") or {}).get("name")] = doc
    configmaps, secrets = set(names.get("ConfigMap", {})), set(names.get("Secret", {})) | USER_SECRETS
    findings, pod_labels = [], []
    for doc in docs:
        if doc.get("kind") not in WORKLOADS:
            continue
        name = "%s/%s" % (doc["kind"], doc["metadata"]["name"])
        spec = pod_spec(doc)
        template = doc.get("spec", {}).get("template") or {}
        pod_labels.append((template.get("metadata") or {}).get("labels") or {})
        wanted = []  # (kind, name)
        for v in spec.get("volumes") or []:
            if "configMap" in v:
                wanted.append(("ConfigMap", v["configMap"]["name"]))
            if "secret" in v:
                wanted.append(("Secret", v["secret"]["secretName"]))
            for src in (v.get("projected") or {}).get("sources") or []:
                if "configMap" in src:
                    wanted.append(("ConfigMap", src["configMap"]["name"]))
                if "secret" in src:
                    wanted.append(("Secret", src["secret"]["name"]))
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            findings += ["%s container %s: %s" % (name, c.get("name"), m) for m in probe_port_problems(c)]
            for e in c.get("envFrom") or []:
                if "configMapRef" in e:
                    wanted.append(("ConfigMap", e["configMapRef"]["name"]))
                if "secretRef" in e:
                    wanted.append(("Secret", e["secretRef"]["name"]))
            for e in c.get("env") or []:
                ref = e.get("valueFrom") or {}
                if "configMapKeyRef" in ref:
                    wanted.append(("ConfigMap", ref["configMapKeyRef"]["name"]))
                if "secretKeyRef" in ref:
                    wanted.append(("Secret", ref["secretKeyRef"]["name"]))
        for kind, ref in wanted:
            if ref not in (configmaps if kind == "ConfigMap" else secrets):
                findings.append("%s: %s %r is neither in the rendering nor created by the user" % (name, kind, ref))
        if doc["kind"] == "StatefulSet":
            # Pods of a replicated set find each other by their per-pod names, which only a
            # headless Service gives; a single replica may sit behind a ClusterIP Service.
            svc = names.get("Service", {}).get(doc["spec"].get("serviceName"))
            headless = svc is not None and (svc.get("spec") or {}).get("clusterIP") == "None"
            if svc is None or (doc["spec"].get("replicas", 1) > 1 and not headless):
                findings.append("%s: serviceName %r is not a%s Service of the rendering"
                                % (name, doc["spec"].get("serviceName"), "" if svc is None else " headless"))
    for svc_name, svc in names.get("Service", {}).items():
        selector = (svc.get("spec") or {}).get("selector") or {}
        if selector and not any(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels):
            findings.append("Service/%s: selector %s matches no workload's pods" % (svc_name, selector))
    return findings


def reloader_problems(spec):
    """What keeps the config-reloader of a pod from getting a ConfigMap change to hopauth."""
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    reloader = next((c for c in containers if c.get("name") == RELOADER), None)
    if reloader is None:
        return []
    out = []
    if spec.get("shareProcessNamespace") is not True:
        out.append("shareProcessNamespace is not true: the reloader cannot see hopauth's process")
    hopauth = next((c for c in containers if is_hopauth(c)), None)
    if hopauth is None:
        return out + ["a config-reloader without a hopauth container"]
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    user = lambda c: (c.get("securityContext") or {}).get("runAsUser", (spec.get("securityContext") or {}).get("runAsUser"))
    if user(reloader) != user(hopauth):
        out.append("the reloader runs as user %r, hopauth as %r: it cannot signal hopauth" % (user(reloader), user(hopauth)))
    watched = [m for m in reloader.get("volumeMounts") or [] if "configMap" in volumes.get(m.get("name"), {})]
    if not watched:
        out.append("the reloader mounts no ConfigMap")
    for m in watched:
        name = volumes[m["name"]]["configMap"]["name"]
        if KUSTOMIZE_HASH.search(name):
            out.append("ConfigMap %r has a content-hash name: an edit makes a new ConfigMap, not an update" % name)
        shared = [h for h in hopauth.get("volumeMounts") or [] if h.get("name") == m["name"]]
        if not shared:
            out.append("hopauth does not mount the volume %r the reloader watches" % m["name"])
        for mount, who in [(m, "reloader")] + [(h, "hopauth") for h in shared]:
            if mount.get("subPath") or mount.get("subPathExpr"):
                out.append("the %s mounts %r with subPath: such a mount is never updated" % (who, m["name"]))
    return out


def lint_docs(docs):
    docs = [d for d in docs if d]
    findings, hopauth = [], 0
    for doc in docs:
        f, h = lint_doc(doc)
        findings += f
        hopauth += h
    return findings + references(docs), hopauth


def self_test():
    """Each rule must catch a broken copy of the base Deployment, the ServiceMonitor and the
    PrometheusRule."""
    def load(path):
        with open(os.path.join(HERE, path)) as f:
            return yaml.safe_load(f)

    deployment = load("base/deployment.yaml")
    service = load("base/service.yaml")
    monitor = load("components/monitoring/servicemonitor.yaml")
    rules = load("components/monitoring/prometheusrule.yaml")
    # The base's configMapGenerator makes these (with a hash suffix kustomize also puts in
    # the Deployment's references).
    configmaps = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}}
                  for n in ("orders-hopauth", "orders-envoy")]
    whole = [deployment, service, monitor, rules] + configmaps
    assert lint_docs(whole) == ([], 1), lint_docs(whole)

    def hop(d):
        return [c for c in d["spec"]["template"]["spec"]["initContainers"] if c["name"] == "hopauth"][0]

    def app(d):
        return d["spec"]["template"]["spec"]["containers"][0]

    breakages = {
        "latest tag": lambda d: app(d).update(image="ghcr.io/example/orders:latest"),
        "no tag": lambda d: hop(d).update(image="ghcr.io/hopauth/hopauth"),
        "root filesystem writable": lambda d: app(d)["securityContext"].pop("readOnlyRootFilesystem"),
        "privilege escalation": lambda d: hop(d)["securityContext"].update(allowPrivilegeEscalation=True),
        "capabilities kept": lambda d: app(d)["securityContext"].pop("capabilities"),
        "runs as root": lambda d: (
            d["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot"),
            [c["securityContext"].pop("runAsNonRoot") for c in [app(d)]],
        ),
        "no memory limit": lambda d: app(d)["resources"]["limits"].pop("memory"),
        "no requests": lambda d: hop(d)["resources"].pop("requests"),
        "readiness on /healthz": lambda d: hop(d)["readinessProbe"]["httpGet"].update(path="/healthz"),
        "no liveness": lambda d: hop(d).pop("livenessProbe"),
        "token mounted": lambda d: d["spec"]["template"]["spec"].pop("automountServiceAccountToken"),
        "host network": lambda d: d["spec"]["template"]["spec"].update(hostNetwork=True),
    }
    for what, breaking in breakages.items():
        broken = copy.deepcopy(deployment)
        breaking(broken)
        findings, _ = lint_docs([broken])
        assert findings, "lint missed: %s" % what
    references_broken = {
        "missing ConfigMap": lambda d, s: d["spec"]["template"]["spec"]["volumes"][0]["configMap"].update(name="nope"),
        "missing Secret": lambda d, s: hop(d)["env"][1]["valueFrom"]["secretKeyRef"].update(name="nope"),
        "Service selects nothing": lambda d, s: s["spec"]["selector"].update({"app.kubernetes.io/name": "order"}),
        "probe on an undeclared port": lambda d, s: hop(d)["readinessProbe"]["httpGet"].update(port="http"),
    }
    for what, breaking in references_broken.items():
        d, svc = copy.deepcopy(deployment), copy.deepcopy(service)
        breaking(d, svc)
        assert lint_docs([d, svc] + configmaps)[0], "lint missed: %s" % what
    # The config-reload component's patch, applied by hand as kustomize does.
    patch = load("components/config-reload/deployment-patch.yaml")["spec"]["template"]["spec"]
    reloading = copy.deepcopy(deployment)
    reloading["spec"]["template"]["spec"]["shareProcessNamespace"] = patch["shareProcessNamespace"]
    reloading["spec"]["template"]["spec"]["containers"] += patch["containers"]
    assert lint_docs([reloading] + configmaps) == ([], 1), lint_docs([reloading] + configmaps)

    def reloader(d):
        return [c for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == RELOADER][0]

    reload_broken = {
        "reloader without a shared process namespace": lambda d: d["spec"]["template"]["spec"].pop("shareProcessNamespace"),
        "reloader as another user": lambda d: reloader(d)["securityContext"].update(runAsUser=1000),
        "hopauth config by subPath": lambda d: hop(d)["volumeMounts"][0].update(subPath="hopauth.yaml"),
        "hashed ConfigMap name": lambda d: d["spec"]["template"]["spec"]["volumes"][0]["configMap"].update(
            name="orders-hopauth-5h7c9m2k8t"),
    }
    for what, breaking in reload_broken.items():
        broken = copy.deepcopy(reloading)
        breaking(broken)
        assert lint_docs([broken] + configmaps + [{"kind": "ConfigMap", "metadata": {"name": "orders-hopauth-5h7c9m2k8t"}}])[0], \
            "lint missed: %s" % what
    broken = copy.deepcopy(monitor)
    broken["spec"]["endpoints"][0]["intervall"] = "15s"
    assert lint_docs([broken])[0], "lint missed: ServiceMonitor typo"
    broken = copy.deepcopy(rules)
    broken["spec"]["groups"][0]["rules"][0]["expresion"] = broken["spec"]["groups"][0]["rules"][0].pop("expr")
    assert lint_docs([broken])[0], "lint missed: PrometheusRule typo"
    print("lint self-test: %d breakages caught" % (len(breakages) + len(references_broken) + len(reload_broken) + 2))


def main(argv):
    if argv == ["--self-test"]:
        self_test()
        return 0
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for path in argv:
        with open(path) as f:
            docs = list(yaml.safe_load_all(f))
        findings, hopauth = lint_docs(docs)
        if hopauth == 0:
            findings.append("no hopauth container found: is this the right manifest?")
        for finding in findings:
            print("LINT %s: %s" % (path, finding), file=sys.stderr)
        failed |= bool(findings)
        if not findings:
            print("lint %s: %d documents, %d hopauth containers, ok" % (path, len([d for d in docs if d]), hopauth))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
