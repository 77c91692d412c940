#!/usr/bin/env bash
# Issue 5's scenario on a real kind cluster. NOT run in CI here: these machines have no
# Docker and no cluster; CI proves the same behaviour against kmock (tests/operator/).
# Needs: kind, kubectl, helm, docker, and network access for the python:3.11-slim base.
#   tests/e2e/kind.sh                 # KEEP=1 leaves the cluster up afterwards
#
# 1. apply a ModelRoute → the namespace's ConfigMap and Ready=True
# 2. an unknown provider → refused at apply by the validating webhook
# 3. the injected sidecar in --kube mode picks up a route change within 2 s
# 4. a FailoverPolicy over 5 namespaces, batch size 2: 3 batches; a regression injected
#    in batch 2 (its upstream fails every request) rolls that batch back and halts
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=${CLUSTER:-modelroute-e2e}
IMAGE=modelroute:e2e
say() { printf '\n== %s\n' "$*"; }

kind create cluster --name "$CLUSTER"
[ "${KEEP:-0}" = 1 ] || trap 'kind delete cluster --name "$CLUSTER"' EXIT
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"
helm install modelroute charts/modelroute -n modelroute-system --create-namespace \
    --set image.repository=modelroute --set image.tag=e2e --set image.pullPolicy=Never --wait

# -- one namespace: a fake provider in two regions, a route, an app with the sidecar -------
namespace() {  # namespace NAME [fake-provider flags...]
    local ns=$1 extra=""
    shift
    for flag in "$@"; do extra+=", \"$flag\""; done
    kubectl create namespace "$ns"
    kubectl label namespace "$ns" modelroute.io/enabled=true tier=e2e
    kubectl -n "$ns" apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: fake}
spec:
  selector: {matchLabels: {app: fake}}
  template:
    metadata:
      labels: {app: fake}
      annotations: {modelroute.io/inject: "false"}
    spec:
      containers:
        - name: fake
          image: $IMAGE
          imagePullPolicy: Never
          args: [fake-provider, --listen, "0.0.0.0:8080", --latency-ms, "20"$extra]
          ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: fake}
spec: {selector: {app: fake}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: modelroute.io/v1alpha1
kind: ModelProvider
metadata: {name: fake}
spec:
  endpoints:
    - {region: us-east, baseURL: "http://fake.$ns.svc/v1"}
    - {region: eu-west, baseURL: "http://fake.$ns.svc/v1"}
  # no credentials: the fake is keyless (a real provider names a Secret, docs/install.md)
YAML
    kubectl -n "$ns" apply -f - <<'YAML'
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {name: general}
spec:
  models: [general]
  targets:
    - {provider: fake, model: deepseek-v4-flash, tier: 0}
    - {provider: fake, model: qwen3-32b, tier: 1}
YAML
    kubectl -n "$ns" wait mroute/general --for=condition=Ready --timeout=60s
    # the app: asks its sidecar for "general" five times a second
    kubectl -n "$ns" apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
        - name: app
          image: $IMAGE
          imagePullPolicy: Never
          command: [python, -c]
          args:
            - |
              import json, os, time, urllib.request
              url = os.environ["OPENAI_BASE_URL"] + "/chat/completions"
              body = json.dumps({"model": "general", "messages": [{"role": "user", "content": "hi"}]}).encode()
              while True:
                  try:
                      urllib.request.urlopen(urllib.request.Request(url, body, {"content-type": "application/json"}), timeout=5).read()
                  except Exception as exc:
                      print("request failed:", exc, flush=True)
                  time.sleep(0.2)
YAML
    kubectl -n "$ns" rollout status deploy/fake deploy/app --timeout=120s
}

# asks the injected sidecar from inside the app pod which target served "general"
served_by() {
    kubectl -n "$1" exec deploy/app -c app -- python -c '
import json, os, urllib.request
body = json.dumps({"model": "general", "messages": [{"role": "user", "content": "hi"}]}).encode()
req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", body, {"content-type": "application/json"})
print(urllib.request.urlopen(req, timeout=5).headers["x-modelroute-target"])'
}

say "1. a ModelRoute compiles into the namespace's table, Ready=True"
namespace team-1
kubectl -n team-1 get configmap modelroute-table -o jsonpath='{.metadata.annotations.modelroute\.io/hash}'
echo
kubectl -n team-1 get mroute

say "2. an unknown provider is refused at apply, with what to fix"
if kubectl -n team-1 apply -f - <<'YAML'; then echo "expected a refusal"; exit 1; fi
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {name: typo}
spec: {models: [typo], targets: [{provider: fakke, model: qwen3-8b}]}
YAML

say "3. the sidecar picks up a route change within 2 s"
names=$(kubectl -n team-1 get pod -l app=app \
    -o jsonpath='{.items[0].spec.initContainers[*].name} {.items[0].spec.containers[*].name}')
[[ " $names " == *" modelroute-proxy "* ]] || { echo "no sidecar injected: $names"; exit 1; }
echo "served by $(served_by team-1)"
kubectl -n team-1 patch mroute general --type=merge -p \
    '{"spec":{"targets":[{"provider":"fake","model":"qwen3-32b","tier":0}]}}'
start=$EPOCHREALTIME
until served_by team-1 | grep -q qwen3-32b; do
    elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {print b - a}')
    awk -v e="$elapsed" 'BEGIN {exit !(e > 10)}' && { echo "no pickup in 10 s"; exit 1; }
    sleep 0.2
done
# from the patch: the operator's reconcile, its ConfigMap write and the sidecar's watch
# (each kubectl exec adds its own ~0.3 s; the sidecar's share is milliseconds)
echo "picked up after $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {print b - a}') s"

say "4. a FailoverPolicy over 5 namespaces, batch size 2, regression injected in batch 2"
namespace team-2
namespace team-3 --error-rate 1.0 # batch 2: every upstream answer fails
namespace team-4
namespace team-5
kubectl apply -f - <<'YAML'
apiVersion: modelroute.io/v1alpha1
kind: FailoverPolicy
metadata: {name: e2e-regions}
spec:
  namespaceSelector: {matchLabels: {tier: e2e}}
  regionPreference: [eu-west, us-east]
  rollout: {batchSize: 2, pauseSeconds: 10, healthTimeoutSeconds: 60, maxErrorRate: 0.05}
YAML
kubectl wait failoverpolicy/e2e-regions --for=jsonpath='{.status.phase}'=Halted --timeout=300s
kubectl get failoverpolicy e2e-regions -o jsonpath='{range .status.namespaces[*]}{.namespace}{" batch "}{.batch}{": "}{.state}{"\n"}{end}'
states=$(kubectl get failoverpolicy e2e-regions -o jsonpath='{range .status.namespaces[*]}{.namespace}={.state} {end}')
for want in team-1=healthy team-2=healthy team-3=rolledBack team-4=rolledBack team-5=pending; do
    [[ " $states " == *" $want "* ]] || { echo "expected $want in: $states"; exit 1; }
done
echo "e2e OK"
