# Shared settings for the connect-gate test stack scripts. Sourced, not run.
# shellcheck shell=bash

STACK_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${CONNECT_GATE_STACK_CACHE:-$HOME/.cache/connect-gate-stack}"

# Pinned versions. Changing K8S_VERSION means re-running k8s/gen-gomod and
# committing the regenerated k8s/go.mod + go.sum.
K8S_VERSION="${K8S_VERSION_OVERRIDE:-v1.34.4}"
ETCD_VERSION="v3.6.16"
KAFKA_VERSION="4.3.1"
# Flux's kustomize-controller (only with `build --flux` / `up --flux` / `flux start`). The version
# is the require line of kustomize-controller/go.mod; this copy names the cache entry and is checked against it.
FLUX_KC_VERSION="v1.9.6"
# The source-controller CRDs installed with it (part of the cache key): ExternalArtifact, the
# source the tests use, and every other source kind the controller watches.
FLUX_SOURCE_CRDS="externalartifacts gitrepositories ocirepositories buckets"
# cert-manager's controllers and CA injector (only with `build --cluster` / `cert-manager-ctl start`):
# cert-manager/main.go over the root module github.com/cert-manager/cert-manager. The version is the
# require line of cert-manager/go.mod; this copy names the cache entry and is checked against it.
CERT_MANAGER_VERSION="v1.21.2"
# prometheus + promtool (only with `build --prometheus`): the Go module github.com/prometheus/prometheus,
# which publishes Prometheus 3.X.Y as v0.3XX.Y. The version is the require line of prometheus/go.mod;
# this copy names the cache entry and is checked against it. With them, the PodMonitor and
# PrometheusRule CRDs of the Prometheus Operator's module at PROMETHEUS_OPERATOR_VERSION.
PROMETHEUS_VERSION="v0.316.0"
PROMETHEUS_OPERATOR_VERSION="v0.85.0"

# Go builds keep their module and build caches inside the stack cache so that
# the stack is self-contained (and `rm -rf $CACHE` really resets everything).
export GOMODCACHE="$CACHE/go/mod"
export GOCACHE="$CACHE/go/build"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# Install Debian packages only when a command is missing.
need_cmd() { # need_cmd CMD DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  log "$1 missing; installing Debian package $2"
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
  else
    sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
  fi
  command -v "$1" >/dev/null 2>&1 || die "could not install $1 (package $2)"
}

short_hash() { cat "$@" | sha256sum | cut -c1-12; }

# Where `build` puts things (content-addressed on the inputs, so editing a
# wrapper go.mod / pom.xml rebuilds instead of reusing a stale artifact).
k8s_dir()   { echo "$CACHE/k8s/$K8S_VERSION-$( (go version; cat "$STACK_SRC/k8s/go.mod" "$STACK_SRC/k8s/go.sum") | short_hash)"; }
etcd_dir()  { echo "$CACHE/etcd/$ETCD_VERSION-$( (go version; cat "$STACK_SRC/etcd/go.mod" "$STACK_SRC/etcd/go.sum") | short_hash)"; }
flux_dir()  { echo "$CACHE/flux/kustomize-controller-$FLUX_KC_VERSION-$( (go version; echo "$FLUX_SOURCE_CRDS"; cat "$STACK_SRC/kustomize-controller/go.mod" "$STACK_SRC/kustomize-controller/go.sum") | short_hash)"; }
cert_manager_dir() { echo "$CACHE/cert-manager/$CERT_MANAGER_VERSION-$( (go version; cat "$STACK_SRC/cert-manager/go.mod" "$STACK_SRC/cert-manager/go.sum" "$STACK_SRC/cert-manager/main.go") | short_hash)"; }
prometheus_dir() { echo "$CACHE/prometheus/$PROMETHEUS_VERSION-$( (go version; echo "$PROMETHEUS_OPERATOR_VERSION"; cat "$STACK_SRC/prometheus/go.mod" "$STACK_SRC/prometheus/go.sum") | short_hash)"; }
kafka_dir() { echo "$CACHE/kafka/$KAFKA_VERSION-$(short_hash "$STACK_SRC/kafka/pom.xml")"; }

# ---- ports -----------------------------------------------------------------
# A random loopback port (10000 up to the ephemeral range) that nothing on this machine has bound (any state in
# /proc/net/tcp{,6}) and that this stack has not handed out yet. Same race as
# envtest: the port is free when chosen, the component binds it moments later.
free_port() {
  local used p i
  local hex lo=10000 hi eph
  # Stay below the kernel's ephemeral range: outgoing connections (Kafka
  # clients, the tests' HTTP clients) take ports from it at any moment.
  read -r eph _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph=32768
  hi=$(( eph > lo + 1000 ? eph : 32768 ))
  used="$(for hex in $(awk 'FNR>1 {n=split($2, a, ":"); print a[n]}' /proc/net/tcp /proc/net/tcp6 2>/dev/null); do echo $((16#$hex)); done | sort -u)"
  for i in $(seq 1 200); do
    p=$(( lo + (RANDOM * 32768 + RANDOM) % (hi - lo) ))
    grep -qx "$p" <<<"$used" && continue
    if [ -n "${STACK_DIR:-}" ]; then
      grep -qx "$p" "$STACK_DIR/.ports" 2>/dev/null && continue
      echo "$p" >> "$STACK_DIR/.ports"
    fi
    echo "$p"; return 0
  done
  die "no free loopback port found"
}

# ---- processes ---------------------------------------------------------------
# start_bg NAME CMD...: runs CMD in its own session, output to $STACK_DIR/NAME/log,
# pid in $STACK_DIR/NAME/pid. Never holds the caller's stdout/stderr/stdin.
start_bg() {
  local name="$1"; shift
  mkdir -p "$STACK_DIR/$name"
  setsid "$@" </dev/null >>"$STACK_DIR/$name/log" 2>&1 &
  echo $! > "$STACK_DIR/$name/pid"
}

is_running() { local f="$STACK_DIR/$1/pid"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

fail_with_log() { # fail_with_log NAME MESSAGE
  local name="$1"; shift
  printf '[stack] ERROR: %s\n' "$*" >&2
  if [ -f "$STACK_DIR/$name/log" ]; then
    printf '[stack] ---- last 60 lines of %s ----\n' "$STACK_DIR/$name/log" >&2
    tail -n 60 "$STACK_DIR/$name/log" >&2
    printf '[stack] ---- end of %s log ----\n' "$name" >&2
  fi
  exit 1
}

# wait_until NAME TIMEOUT_S DESCRIPTION CMD...: polls CMD every 0.25s until it
# succeeds; fails with NAME's log tail if the process dies or time runs out.
wait_until() {
  local name="$1" timeout="$2" what="$3"; shift 3
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    is_running "$name" || fail_with_log "$name" "$name exited while waiting for $what"
    [ "$(date +%s)" -lt "$deadline" ] || fail_with_log "$name" "$name: timed out after ${timeout}s waiting for $what"
    sleep 0.25
  done
}

# stop_pid PIDFILE [GRACE_S]: SIGTERM the process group, SIGKILL after grace.
stop_pidfile() {
  local f="$1" grace="${2:-20}" pid i
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 $(( grace * 4 ))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f"
}

JAVA_OPTS_DEFAULT="-Xms64m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k -Djava.awt.headless=true"

# ---- the single-node cluster (`up --cluster`, tests/stack/node) ------------------------------
# Fixed addresses, all in 198.18.0.0/15 (benchmark networks): one cluster stack per machine.
NODE_NAME=node1
NODE_IP=198.18.0.1
POD_CIDR=198.18.1.0/24
POD_GATEWAY=198.18.1.1
SERVICE_CIDR=198.19.0.0/24
# The broker's listener for pods (the stack's own clients keep theirs on loopback).
KAFKA_NODE_LISTENER="$NODE_IP:9092"

# pki_sign NAME SUBJECT EXTENSIONS: $STACK_DIR/pki/NAME.{key,crt}, signed by the stack's CA.
pki_sign() {
  (
    cd "$STACK_DIR/pki"
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" >/dev/null 2>&1
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 2 \
      -extfile "$1.ext" >/dev/null 2>&1
  )
}

# kubeconfig_for NAME: a kubeconfig for the client certificate $STACK_DIR/pki/NAME.{crt,key}
# against the stack's API server ($API_URL).
kubeconfig_for() {
  local pki="$STACK_DIR/pki"
  cat <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: connect-gate-stack
  cluster:
    server: $API_URL
    certificate-authority-data: $(base64 -w0 < "$pki/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $(base64 -w0 < "$pki/$1.crt")
    client-key-data: $(base64 -w0 < "$pki/$1.key")
contexts:
- name: connect-gate-stack
  context:
    cluster: connect-gate-stack
    user: $1
    namespace: default
current-context: connect-gate-stack
KCFG
}
