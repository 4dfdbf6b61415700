#!/usr/bin/env bash
# A real, local Kubernetes control plane for tests: etcd + kube-apiserver +
# kube-scheduler on 127.0.0.1 (no kube-controller-manager, no kubelets).
#
# Usage: hack/controlplane.sh start|stop|status|env
#   start   build the binaries if needed (hack/build-controlplane.sh), start the
#           three components on free loopback ports, wait until the apiserver's
#           /readyz and the scheduler's /healthz answer ok, write an admin
#           kubeconfig and print `export KUBECONFIG=...` on stdout.
#           Does nothing (but print the exports) if the plane is already running.
#   stop    kill the components by PID and remove the run dir.
#   status  exit 0 if all three components are running, 1 if not.
#   env     print KUBECONFIG=<path> (exit 1 if the plane is not running).
#   stop-apiserver     stop only kube-apiserver (etcd and the scheduler keep
#                      running), e.g. to test clients across an API outage.
#   start-apiserver    start it again with its first command line (same port,
#                      certificates and etcd) and wait until /readyz is ok.
#   restart-apiserver [SECONDS]  stop-apiserver, wait SECONDS (default 0),
#                      start-apiserver.
#
# Environment:
#   KUBESCALER_RUN_DIR          run dir: data, certs, logs, PIDs, kubeconfig
#                               (default /tmp/kubescaler-controlplane)
#   KUBESCALER_CONTROLPLANE_BIN dir with kube-apiserver, kube-scheduler, etcd
#                               (default: whatever hack/build-controlplane.sh prints)
#   KUBESCALER_START_TIMEOUT    seconds to wait for each component (default 120)
#   KUBESCALER_KEEP_RUN_DIR=1   make `stop` keep the run dir (logs) instead of removing it
#   KUBESCALER_AUDIT            what the API server's audit log records (Metadata
#                               level): `kubescaler` (default) only requests of the
#                               kubescaler-e2e identity, `all` every request, `off` none
#
# Cluster API's CRDs are not installed here (each test installs them): fetch them once
# and name their directory for the tests, as .ci/run does:
#   export KUBESCALER_CAPI_CRDS=$(bash hack/capi-crds.sh | tail -n1)
#
# Files in the run dir: kubeconfig (admin, group system:masters, certificate
# data embedded), kubeconfig-kubescaler (a second admin identity, user
# kubescaler-e2e in group system:masters, so that tests can tell kubescaler's
# requests apart in the audit log), audit.log (JSON lines) and
# audit-policy.yaml, env (KUBECONFIG, KUBESCALER_APISERVER_URL, ports), pki/,
# etcd-data/, <component>.log, <component>.pid.
#
# What is absent: no controller-manager (no default ServiceAccounts, so the
# ServiceAccount admission plugin is disabled, as envtest does; no node
# lifecycle controller, so the TaintNodesByCondition admission plugin is
# disabled too: it would give every new Node a node.kubernetes.io/not-ready
# NoSchedule taint that nothing would ever remove; no garbage collection;
# namespaces never finish deleting) and no kubelets (create Node objects
# yourself and patch their status; pods deleted with a grace period stay until
# deleted with --grace-period=0 --force).
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUN_DIR=${KUBESCALER_RUN_DIR:-/tmp/kubescaler-controlplane}
TIMEOUT=${KUBESCALER_START_TIMEOUT:-120}
MARKER=.kubescaler-controlplane
COMPONENTS=(etcd kube-apiserver kube-scheduler)
KUBECONFIG_PATH=$RUN_DIR/kubeconfig

log() { printf '[controlplane] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# --- processes ---------------------------------------------------------------

# PID of a component if its pidfile names a live process running that binary.
component_pid() { # <name>
    local pidfile=$RUN_DIR/$1.pid pid exe
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against PID reuse: the process must be our binary.
    # (A zombie has no exe link, and before the exec the process is still bash.)
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    exe=${exe% (deleted)}
    [[ ${exe##*/} == "$1" ]] || return 1
    echo "$pid"
}

is_running() { component_pid "$1" >/dev/null; }

all_running() {
    local c
    for c in "${COMPONENTS[@]}"; do is_running "$c" || return 1; done
}

any_running() {
    local c
    for c in "${COMPONENTS[@]}"; do is_running "$c" && return 0; done
    return 1
}

# Start a detached component (own session, stdin/stdout/stderr redirected so
# that callers reading our output are not kept waiting) and record its PID.
launch() { # <name> <binary> <args...>
    local name=$1 bin=$2
    shift 2
    log "starting $name"
    printf '%q ' "$bin" "$@" >"$RUN_DIR/$name.cmdline"
    # The daemon keeps no other inherited descriptor: neither our run-dir lock
    # (fd 8) nor a caller's pipe that someone may be reading until EOF.
    # shellcheck disable=SC2016
    setsid bash -c '
        for fd in /proc/$$/fd/*; do
            fd=${fd##*/}
            if ((fd > 2)) && [[ -e /proc/$$/fd/$fd ]]; then exec {fd}>&-; fi
        done
        echo $$ >"$0"
        exec "$@"' "$RUN_DIR/$name.pid" "$bin" "$@" \
        </dev/null >>"$RUN_DIR/$name.log" 2>&1 &
    # Wait for the pidfile (written by the child) and for the exec.
    local i
    for i in $(seq 100); do
        is_running "$name" && return 0
        if [[ -s $RUN_DIR/$name.pid ]] && ! kill -0 "$(<"$RUN_DIR/$name.pid")" 2>/dev/null; then
            fail "$name" "exited at once"
        fi
        sleep 0.1
    done
    fail "$name" "did not start"
}

kill_component() { # <name>
    local name=$1 pid i
    pid=$(component_pid "$name") || { rm -f "$RUN_DIR/$name.pid"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) did not stop on SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$RUN_DIR/$name.pid"
}

kill_all() {
    local i
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do kill_component "${COMPONENTS[i]}"; done
}

# A failed start: show the component's log, stop what was started, keep the
# run dir for inspection.
fail() { # <name> <message>
    log "ERROR: $1 $2"
    if [[ -f $RUN_DIR/$1.log ]]; then
        log "last lines of $RUN_DIR/$1.log:"
        tail -n 40 "$RUN_DIR/$1.log" | sed 's/^/    /' >&2
    fi
    kill_all
    log "run dir kept for inspection: $RUN_DIR (remove it with: $0 stop)"
    exit 1
}

# Poll until <check...> succeeds; fail if the component dies or time runs out.
wait_for() { # <name> <check command...>
    local name=$1 deadline=$((SECONDS + TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        is_running "$name" || fail "$name" "exited during start-up"
        ((SECONDS < deadline)) || fail "$name" "not ready after ${TIMEOUT}s"
        sleep 0.25
    done
}

# --- ports and certificates ---------------------------------------------------

# Print <n> distinct free TCP ports on 127.0.0.1.
free_ports() { # <n>
    if command -v python3 >/dev/null; then
        python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
    else
        local ports=() p
        while ((${#ports[@]} < $1)); do
            p=$((20000 + RANDOM % 30000))
            [[ " ${ports[*]} " == *" $p "* ]] && continue
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue # in use
            ports+=("$p")
        done
        echo "${ports[*]}"
    fi
}

# Sign a leaf certificate with a CA (default: ca). <ext> is an openssl
# extension section body.
sign_cert() { # <name> <subject> <ext> [ca]
    local name=$1 subj=$2 ext=$3 ca=${4:-ca} pki=$RUN_DIR/pki
    openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" \
        -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
    printf '%s\n' "$ext" >"$pki/$name.ext"
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
        -CAcreateserial -days 365 -sha256 -extfile "$pki/$name.ext" \
        -out "$pki/$name.crt" 2>/dev/null
    rm -f "$pki/$name.csr" "$pki/$name.ext"
}

make_pki() {
    local pki=$RUN_DIR/pki
    mkdir -p "$pki"
    chmod 700 "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" \
        -days 365 -sha256 -subj "/CN=kubescaler-local-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    sign_cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    sign_cert admin "/O=system:masters/CN=kubescaler-admin" "$client"
    # A second admin identity for kubescaler under test (see the audit log).
    sign_cert kubescaler "/O=system:masters/CN=kubescaler-e2e" "$client"
    # The scheduler gets its own identity, bound by the bootstrap RBAC policy
    # (as kubeadm does).
    sign_cert scheduler "/CN=system:kube-scheduler" "$client"
    # Front proxy (request-header authentication), as kubeadm sets it up:
    # without it the extension-apiserver-authentication ConfigMap lacks a
    # request-header CA and the scheduler's delegated authentication keeps
    # logging errors about it.
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/front-proxy-ca.key" \
        -out "$pki/front-proxy-ca.crt" -days 365 -sha256 -subj "/CN=kubescaler-front-proxy-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    sign_cert front-proxy-client "/CN=front-proxy-client" "$client" front-proxy-ca
    # Service-account token signing key pair.
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
    openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

b64() { base64 -w0 <"$1"; }

write_kubeconfig() { # <path> <user> <cert> <key>
    local tmp=$1.tmp
    cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubescaler-local
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(b64 "$RUN_DIR/pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$3")
    client-key-data: $(b64 "$4")
contexts:
- name: kubescaler-local
  context:
    cluster: kubescaler-local
    user: $2
    namespace: default
current-context: kubescaler-local
EOF
    chmod 600 "$tmp"
    mv -f "$tmp" "$1"
}

# --- health checks ---------------------------------------------------------------

etcd_healthy() {
    curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'
}

apiserver_ready() {
    [[ $(curl -fsS --max-time 5 --cacert "$RUN_DIR/pki/ca.crt" \
        --cert "$RUN_DIR/pki/admin.crt" --key "$RUN_DIR/pki/admin.key" \
        "$APISERVER_URL/readyz") == ok ]]
}

scheduler_healthy() {
    # The scheduler serves a self-signed certificate; /healthz is always allowed.
    [[ $(curl -fsS --max-time 2 -k "https://127.0.0.1:$SCHEDULER_PORT/healthz") == ok ]]
}

print_env() {
    echo "export KUBECONFIG=$KUBECONFIG_PATH"
    # shellcheck disable=SC1091
    [[ -f $RUN_DIR/env ]] && (. "$RUN_DIR/env" && echo "export KUBESCALER_APISERVER_URL=$KUBESCALER_APISERVER_URL")
    return 0
}

# --- commands ------------------------------------------------------------------------

cmd_start() {
    if all_running; then
        log "already running in $RUN_DIR"
        print_env
        return 0
    fi
    if [[ -e $RUN_DIR ]]; then
        [[ -f $RUN_DIR/$MARKER ]] || die "$RUN_DIR exists and is not a control-plane run dir; set KUBESCALER_RUN_DIR"
        log "removing a stale or partial run in $RUN_DIR"
        kill_all
        rm -rf "$RUN_DIR"
    fi

    local bin=${KUBESCALER_CONTROLPLANE_BIN:-}
    if [[ -z $bin ]]; then
        bin=$("$HACK_DIR/build-controlplane.sh" | tail -n1)
    fi
    local c
    for c in "${COMPONENTS[@]}"; do
        [[ -x $bin/$c ]] || die "$bin/$c not found (run hack/build-controlplane.sh)"
    done
    command -v openssl >/dev/null || die "openssl not found"
    command -v curl >/dev/null || die "curl not found"

    local started=$SECONDS
    mkdir -p "$RUN_DIR"
    touch "$RUN_DIR/$MARKER"
    make_pki

    # Audit log: Metadata level, for the kubescaler-e2e identity only unless
    # KUBESCALER_AUDIT says otherwise (each RequestReceived event is one request).
    local audit_flags=()
    case ${KUBESCALER_AUDIT:-kubescaler} in
    off) ;;
    all | kubescaler)
        {
            printf 'apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n'
            if [[ ${KUBESCALER_AUDIT:-kubescaler} == kubescaler ]]; then
                printf -- '- level: Metadata\n  users: ["kubescaler-e2e"]\n- level: None\n'
            else
                printf -- '- level: Metadata\n'
            fi
        } >"$RUN_DIR/audit-policy.yaml"
        audit_flags=(--audit-policy-file="$RUN_DIR/audit-policy.yaml"
            --audit-log-path="$RUN_DIR/audit.log" --audit-log-format=json)
        ;;
    *) die "KUBESCALER_AUDIT must be kubescaler, all or off, not '$KUBESCALER_AUDIT'" ;;
    esac

    read -r ETCD_CLIENT_PORT ETCD_PEER_PORT APISERVER_PORT SCHEDULER_PORT <<<"$(free_ports 4)"
    APISERVER_URL=https://127.0.0.1:$APISERVER_PORT
    cat >"$RUN_DIR/env" <<EOF
KUBECONFIG=$KUBECONFIG_PATH
KUBESCALER_APISERVER_URL=$APISERVER_URL
KUBESCALER_APISERVER_PORT=$APISERVER_PORT
KUBESCALER_ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
KUBESCALER_ETCD_PEER_PORT=$ETCD_PEER_PORT
KUBESCALER_SCHEDULER_PORT=$SCHEDULER_PORT
KUBESCALER_CONTROLPLANE_BIN=$bin
EOF

    launch etcd "$bin/etcd" \
        --name=kubescaler \
        --data-dir="$RUN_DIR/etcd-data" \
        --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster="kubescaler=http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster-state=new \
        --unsafe-no-fsync=true
    wait_for etcd etcd_healthy

    launch kube-apiserver "$bin/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --bind-address=127.0.0.1 \
        --advertise-address=127.0.0.1 \
        --endpoint-reconciler-type=none \
        --secure-port="$APISERVER_PORT" \
        --cert-dir="$RUN_DIR/apiserver-certs" \
        --tls-cert-file="$RUN_DIR/pki/apiserver.crt" \
        --tls-private-key-file="$RUN_DIR/pki/apiserver.key" \
        --client-ca-file="$RUN_DIR/pki/ca.crt" \
        --authorization-mode=RBAC \
        --service-cluster-ip-range=10.0.0.0/24 \
        --allow-privileged=true \
        --service-account-issuer="$APISERVER_URL" \
        --service-account-key-file="$RUN_DIR/pki/sa.pub" \
        --service-account-signing-key-file="$RUN_DIR/pki/sa.key" \
        --disable-admission-plugins=ServiceAccount,TaintNodesByCondition \
        --requestheader-client-ca-file="$RUN_DIR/pki/front-proxy-ca.crt" \
        --requestheader-allowed-names=front-proxy-client \
        --requestheader-username-headers=X-Remote-User \
        --requestheader-group-headers=X-Remote-Group \
        --requestheader-extra-headers-prefix=X-Remote-Extra- \
        --proxy-client-cert-file="$RUN_DIR/pki/front-proxy-client.crt" \
        --proxy-client-key-file="$RUN_DIR/pki/front-proxy-client.key" \
        "${audit_flags[@]}"
    write_kubeconfig "$KUBECONFIG_PATH" kubescaler-admin "$RUN_DIR/pki/admin.crt" "$RUN_DIR/pki/admin.key"
    write_kubeconfig "$RUN_DIR/kubeconfig-kubescaler" kubescaler-e2e \
        "$RUN_DIR/pki/kubescaler.crt" "$RUN_DIR/pki/kubescaler.key"
    write_kubeconfig "$RUN_DIR/scheduler.kubeconfig" system:kube-scheduler \
        "$RUN_DIR/pki/scheduler.crt" "$RUN_DIR/pki/scheduler.key"
    wait_for kube-apiserver apiserver_ready

    launch kube-scheduler "$bin/kube-scheduler" \
        --kubeconfig="$RUN_DIR/scheduler.kubeconfig" \
        --authentication-kubeconfig="$RUN_DIR/scheduler.kubeconfig" \
        --authorization-kubeconfig="$RUN_DIR/scheduler.kubeconfig" \
        --leader-elect=false \
        --bind-address=127.0.0.1 \
        --secure-port="$SCHEDULER_PORT" \
        --cert-dir="$RUN_DIR/scheduler-certs"
    wait_for kube-scheduler scheduler_healthy

    log "ready in $((SECONDS - started))s: apiserver $APISERVER_URL, etcd 127.0.0.1:$ETCD_CLIENT_PORT, scheduler 127.0.0.1:$SCHEDULER_PORT; logs in $RUN_DIR"
    print_env
}

cmd_stop() {
    if [[ ! -e $RUN_DIR ]]; then
        log "not running ($RUN_DIR does not exist)"
        return 0
    fi
    [[ -f $RUN_DIR/$MARKER ]] || die "$RUN_DIR is not a control-plane run dir; not touching it"
    kill_all
    if [[ ${KUBESCALER_KEEP_RUN_DIR:-0} == 1 ]]; then
        log "stopped; run dir kept: $RUN_DIR"
    else
        rm -rf "$RUN_DIR"
        log "stopped; removed $RUN_DIR"
    fi
}

cmd_status() {
    local c pid rc=0
    for c in "${COMPONENTS[@]}"; do
        if pid=$(component_pid "$c"); then
            echo "$c: running (pid $pid)"
        else
            echo "$c: not running"
            rc=1
        fi
    done
    if ((rc == 0)); then
        # shellcheck disable=SC1091
        . "$RUN_DIR/env"
        APISERVER_URL=$KUBESCALER_APISERVER_URL
        if apiserver_ready; then
            echo "kube-apiserver: $APISERVER_URL/readyz ok"
        else
            echo "kube-apiserver: $APISERVER_URL/readyz NOT ok"
            rc=1
        fi
        echo "KUBECONFIG=$KUBECONFIG_PATH"
    fi
    return "$rc"
}

cmd_env() {
    echo "KUBECONFIG=$KUBECONFIG_PATH"
    if ! all_running || [[ ! -f $KUBECONFIG_PATH ]]; then
        log "the control plane is not running (start it with: $0 start)"
        return 1
    fi
}

# Serialise start/stop on one run dir (e.g. parallel tests each calling start).
lock_run_dir() {
    command -v flock >/dev/null || return 0
    mkdir -p "$(dirname "$RUN_DIR")"
    exec 8>"${RUN_DIR%/}.lock"
    if ! flock -n 8; then
        log "waiting for another start/stop on $RUN_DIR"
        flock -w 1800 8 || die "timed out waiting for the lock ${RUN_DIR%/}.lock"
    fi
}

cmd_stop_apiserver() {
    all_running || die "the control plane is not running in $RUN_DIR (start it with: $0 start)"
    kill_component kube-apiserver
    log "kube-apiserver stopped"
}

cmd_start_apiserver() {
    [[ -f $RUN_DIR/$MARKER && -f $RUN_DIR/env && -f $RUN_DIR/kube-apiserver.cmdline ]] ||
        die "no control-plane run in $RUN_DIR (start it with: $0 start)"
    is_running etcd || die "etcd is not running in $RUN_DIR"
    # shellcheck disable=SC1091
    . "$RUN_DIR/env"
    APISERVER_URL=$KUBESCALER_APISERVER_URL
    if ! is_running kube-apiserver; then
        local cmdline argv
        cmdline=$(<"$RUN_DIR/kube-apiserver.cmdline")
        # The file holds the `printf %q` words written by launch: binary, then arguments.
        eval "argv=($cmdline)"
        launch kube-apiserver "${argv[@]}"
    fi
    wait_for kube-apiserver apiserver_ready
    log "kube-apiserver ready: $APISERVER_URL"
}

cmd_restart_apiserver() { # [seconds]
    local down=${1:-0}
    [[ $down =~ ^[0-9]+$ ]] || die "restart-apiserver: SECONDS must be an integer, not '$down'"
    cmd_stop_apiserver
    sleep "$down"
    cmd_start_apiserver
}

case ${1:-} in
start) lock_run_dir && cmd_start ;;
stop) lock_run_dir && cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
stop-apiserver) lock_run_dir && cmd_stop_apiserver ;;
start-apiserver) lock_run_dir && cmd_start_apiserver ;;
restart-apiserver) lock_run_dir && cmd_restart_apiserver "${2:-0}" ;;
-h | --help | help) usage ;;
*) usage ;;
esac
