#!/usr/bin/env bash
# The operator scenario on a real kind cluster (NOT run in CI here: no Docker on CI machines).
# Needs: kind, kubectl, helm, docker. Usage: tests/e2e/kind.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=${CLUSTER:-modelroute-e2e}
kind create cluster --name "$CLUSTER"
trap 'kind delete cluster --name "$CLUSTER"' EXIT
docker build -t modelroute:e2e .
kind load docker-image modelroute:e2e --name "$CLUSTER"
kubectl apply -f crds/
helm install modelroute charts/modelroute --set image.repository=modelroute --set image.tag=e2e --wait
kubectl create namespace llm-apps
kubectl label namespace llm-apps modelroute.io/enabled=true
kubectl apply -f examples/01-provider.yaml -f examples/11-route-general.yaml
kubectl -n llm-apps wait mroute/general --for=condition=Ready --timeout=60s
kubectl -n llm-apps get configmap modelroute-table -o jsonpath='{.metadata.annotations.modelroute\.io/hash}'; echo
# Unknown provider → ResolvedRefs=False (webhook refuses it; bypass shows the status path).
if kubectl -n llm-apps apply -f - <<YAML; then echo "expected refusal"; exit 1; fi
apiVersion: modelroute.io/v1alpha1
kind: ModelRoute
metadata: {name: typo}
spec: {models: [typo], targets: [{provider: gatewey, model: qwen3-8b}]}
YAML
kubectl apply -f examples/20-failoverpolicy.yaml
kubectl wait failoverpolicy/three-regions --for=jsonpath='{.status.phase}'=Complete --timeout=300s
echo "e2e OK"
