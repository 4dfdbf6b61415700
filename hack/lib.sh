# Shared by the scripts that run an example against the real kubescaler binary and a dedicated
# control plane (hack/scale-run.sh, hack/fidelity.sh); sourced, not run. The sourcing script
# sets ROOT (the repository), LOG_TAG (log lines read `[LOG_TAG] ...`) and OUT (the report
# dir, where the example writes kubescaler.pid) before sourcing, exports KUBESCALER_RUN_DIR
# (and KUBESCALER_AUDIT) for hack/controlplane.sh, and sets before `on_exit_cleanup`:
#   KEEP          1: leave the control plane running at the end
#   COPY_AUDIT    1: copy the API server's audit.log next to the report at the end
#   FAILED        what the last line calls a non-zero exit ("FAILED (exit N); ...")
#   FAILED_FILES  what that line says is in $OUT ("...; logs in $OUT")

CP=$ROOT/hack/controlplane.sh
# Where cargo puts the builds: CARGO_TARGET_DIR when set (the scripts run what they built, not
# a stale or missing ./target), else the repository's target/.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }

started_plane=0
# The EXIT trap (see on_exit_cleanup).
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # kubescaler is the example's child and dies with it; make sure of it.
    if [[ -f $OUT/kubescaler.pid ]]; then
        local pid
        pid=$(<"$OUT/kubescaler.pid")
        if [[ $pid =~ ^[0-9]+$ ]] && [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */kubescaler ]]; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
        rm -f "$OUT/kubescaler.pid"
    fi
    if ((started_plane)); then
        if ((COPY_AUDIT)) && [[ -f $KUBESCALER_RUN_DIR/audit.log ]]; then cp "$KUBESCALER_RUN_DIR/audit.log" "$OUT/" || true; fi
        for c in etcd kube-apiserver kube-scheduler; do
            if [[ -f $KUBESCALER_RUN_DIR/$c.log ]]; then
                tail -n 200 "$KUBESCALER_RUN_DIR/$c.log" >"$OUT/$c.log.tail" || true
            fi
        done
        if [[ $KEEP == 1 ]]; then
            log "control plane left running in $KUBESCALER_RUN_DIR"
        else
            bash "$CP" stop || true
        fi
    fi
    if ((rc == 0)); then
        log "done; report in $OUT/report.txt"
    else
        log "$FAILED (exit $rc); $FAILED_FILES in $OUT"
    fi
    exit "$rc"
}
# From here on, on exit (also on failure or Ctrl-C): kubescaler stopped, the plane's logs
# copied into $OUT and the plane stopped (unless KEEP=1) once start_fresh_plane has run, and a
# last line that says how it went.
on_exit_cleanup() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# build_example NAME: $TARGET_DIR/release/kubescaler and examples/NAME.rs, nice'd, release.
build_example() {
    log "building kubescaler and the $1 example (release)"
    nice -n 10 cargo build --release --locked --bin kubescaler --example "$1"
}

# A fresh control plane in $KUBESCALER_RUN_DIR: one already running there is stopped first
# (the examples need an empty cluster).
start_fresh_plane() {
    log "starting a fresh control plane in $KUBESCALER_RUN_DIR"
    if bash "$CP" status >/dev/null 2>&1; then
        log "a control plane is running in $KUBESCALER_RUN_DIR; stopping it (the run needs an empty cluster)"
    fi
    bash "$CP" stop >/dev/null 2>&1 || true
    started_plane=1
    bash "$CP" start >/dev/null
}

# run_example NAME COMMAND [OPTION...]: $TARGET_DIR/release/examples/NAME against the plane
# and $TARGET_DIR/release/kubescaler, its report into $OUT, COMMAND printed as the way to
# reproduce.
run_example() {
    local name=$1 command=$2
    shift 2
    "$TARGET_DIR/release/examples/$name" \
        --run-dir "$KUBESCALER_RUN_DIR" \
        --kubescaler "$TARGET_DIR/release/kubescaler" \
        --out "$OUT" \
        --command "$command" \
        "$@"
}
