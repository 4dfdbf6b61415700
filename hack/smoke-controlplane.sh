#!/usr/bin/env bash
# Smoke check of the local control plane (hack/controlplane.sh): the real
# kube-scheduler binds a pod that fits to a hand-made Node, and leaves a pod
# that does not fit Pending with a FailedScheduling event.
#
# Starts the plane if it is not running, and stops it again at the end if it
# started it (set KUBESCALER_SMOKE_KEEP=1 to leave it running). Exits non-zero
# if a check fails. Uses `kubectl` from PATH (or $KUBECTL).
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CP=$HACK_DIR/controlplane.sh
KUBECTL=${KUBECTL:-kubectl}
NODE=kubescaler-smoke-node
POD_FITS=kubescaler-smoke-fits
POD_TOO_BIG=kubescaler-smoke-too-big
NS=default
WAIT=${KUBESCALER_SMOKE_TIMEOUT:-60}

log() { printf '[smoke] %s\n' "$*" >&2; }

started_here=0
if ! "$CP" status >/dev/null 2>&1; then
    "$CP" start
    started_here=1
fi
export "$("$CP" env)"
log "KUBECONFIG=$KUBECONFIG"

k() { "$KUBECTL" "$@"; }

cleanup() {
    local rc=$?
    k delete pod -n "$NS" "$POD_FITS" "$POD_TOO_BIG" --ignore-not-found --grace-period=0 --force >/dev/null 2>&1 || true
    k delete node "$NODE" --ignore-not-found >/dev/null 2>&1 || true
    if ((started_here)) && [[ ${KUBESCALER_SMOKE_KEEP:-0} != 1 ]]; then
        "$CP" stop || true
    fi
    if ((rc == 0)); then log "PASS"; else log "FAIL (exit $rc)"; fi
}
trap cleanup EXIT

k version 2>/dev/null || true
k get --raw /readyz && echo

# Leftovers of an interrupted run.
k delete pod -n "$NS" "$POD_FITS" "$POD_TOO_BIG" --ignore-not-found --grace-period=0 --force 2>/dev/null
k delete node "$NODE" --ignore-not-found

# A Node as a kubelet would register it. Status is a subresource: create the
# object, then patch its status with capacity/allocatable and Ready=True.
k apply -f - <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $NODE
  labels:
    kubernetes.io/hostname: $NODE
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubescaler-smoke: "true"
EOF
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
k patch node "$NODE" --subresource=status --type=merge -p "{
  \"status\": {
    \"capacity\":    {\"cpu\": \"2\", \"memory\": \"4Gi\", \"pods\": \"110\"},
    \"allocatable\": {\"cpu\": \"2\", \"memory\": \"4Gi\", \"pods\": \"110\"},
    \"conditions\": [{\"type\": \"Ready\", \"status\": \"True\", \"reason\": \"KubeletReady\",
                    \"message\": \"fake node for the smoke check\",
                    \"lastHeartbeatTime\": \"$now\", \"lastTransitionTime\": \"$now\"}]
  }
}"
k get node "$NODE" -o wide
# hack/controlplane.sh disables the TaintNodesByCondition admission plugin, so
# the node has no not-ready taint (no node lifecycle controller would lift it).
taints=$(k get node "$NODE" -o jsonpath='{.spec.taints}')
if [[ -n $taints ]]; then
    log "node $NODE has taints: $taints"
    exit 1
fi

# Two pods pinned to the smoke node by label: one fits (500m of 2 CPUs), one
# cannot fit (100 CPUs).
pod() { # <name> <cpu>
    cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: $NS
spec:
  nodeSelector:
    kubescaler-smoke: "true"
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: registry.k8s.io/pause:3.10
    resources:
      requests:
        cpu: "$2"
        memory: 64Mi
EOF
}
pod "$POD_FITS" 500m | k apply -f -
pod "$POD_TOO_BIG" 100 | k apply -f -

# 1. The pod that fits gets bound to the node by the scheduler.
node_name=""
for _ in $(seq $((WAIT * 4))); do
    node_name=$(k get pod -n "$NS" "$POD_FITS" -o jsonpath='{.spec.nodeName}')
    [[ -n $node_name ]] && break
    sleep 0.25
done
k get pod -n "$NS" -o wide
if [[ $node_name != "$NODE" ]]; then
    log "pod $POD_FITS was not bound to $NODE within ${WAIT}s (nodeName='$node_name')"
    k describe pod -n "$NS" "$POD_FITS" >&2 || true
    exit 1
fi
log "OK: $POD_FITS bound to $node_name"

# 2. The pod that does not fit stays Pending, unschedulable, with a
#    FailedScheduling event.
events=""
for _ in $(seq $((WAIT * 4))); do
    events=$(k get events -n "$NS" \
        --field-selector "involvedObject.kind=Pod,involvedObject.name=$POD_TOO_BIG,reason=FailedScheduling" \
        -o jsonpath='{range .items[*]}{.reason}: {.message}{"\n"}{end}')
    [[ -n $events ]] && break
    sleep 0.25
done
phase=$(k get pod -n "$NS" "$POD_TOO_BIG" -o jsonpath='{.status.phase}')
big_node=$(k get pod -n "$NS" "$POD_TOO_BIG" -o jsonpath='{.spec.nodeName}')
cond=$(k get pod -n "$NS" "$POD_TOO_BIG" \
    -o jsonpath='{range .status.conditions[?(@.type=="PodScheduled")]}{.status}/{.reason}: {.message}{end}')
echo "$POD_TOO_BIG: phase=$phase nodeName='$big_node' PodScheduled=$cond"
echo "$events"
if [[ $phase != Pending || -n $big_node || $cond != False/Unschedulable* || $events != FailedScheduling* ]]; then
    log "pod $POD_TOO_BIG should be Pending/Unschedulable with a FailedScheduling event"
    k describe pod -n "$NS" "$POD_TOO_BIG" >&2 || true
    exit 1
fi
if [[ $events != *"Insufficient cpu"* ]]; then
    log "expected 'Insufficient cpu' in the FailedScheduling message"
    exit 1
fi
log "OK: $POD_TOO_BIG Pending: $cond"
