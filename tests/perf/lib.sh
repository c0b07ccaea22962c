# Shell functions shared by the bench commands (tests/perf/run, tests/perf/scale), sourced after
# tests/stack/lib.sh. They use these globals: OUT (raw outputs), VARS and ENV_FILE (template
# inputs), TEMPLATE (the connector template of dry-runs), and set HEY, TOKEN, CA_B64, GATE_PORT,
# GATE_PID, METRICS_PORT. Every load is bounded and goes to loopback only.

perf_build() { # perf_build DEST: a release build of this tree, copied to DEST
  cargo build --release --locked >&2
  cp "${CARGO_TARGET_DIR:-$root/target}/release/connect-gate" "$1"
}

perf_hey() { # builds `hey` (Go module github.com/rakyll/hey v0.1.4) into the stack cache once
  local dir="$CACHE/tools/hey-v0.1.4"
  if [ ! -x "$dir/hey" ]; then
    log "building hey (Go module github.com/rakyll/hey v0.1.4)"
    mkdir -p "$dir"
    GOBIN="$dir" go install github.com/rakyll/hey@v0.1.4 >&2
  fi
  HEY="$dir/hey"
}

perf_stack() { # perf_stack BIN: brings the stack up (or, with CONNECT_GATE_STACK_ATTACH=1, uses the
  # one the environment describes, and leaves it running), stops every gate started here on exit
  if [ "${CONNECT_GATE_STACK_ATTACH:-}" != 1 ]; then
    eval "$(tests/stack/up)"
    PERF_OWN_STACK=1
  fi
  : > "$OUT/gate.pids"
  trap perf_cleanup EXIT
  trap 'exit 143' INT TERM
  TOKEN="$(cat "$STACK_DIR/pki/admin.token")"
  "$1" certs --out "$OUT/certs" > /dev/null
  CA_B64="$(base64 -w0 < "$OUT/certs/ca.crt")"
}
perf_cleanup() {
  trap - EXIT INT TERM
  # Gates are started in subshells (pipelines): their pids are kept in a file.
  while read -r p; do kill "$p" 2>/dev/null || true; done < "$OUT/gate.pids"
  if declare -F perf_teardown > /dev/null; then perf_teardown || true; fi
  [ -z "${PERF_OWN_STACK:-}" ] || tests/stack/down "$STACK_DIR" >&2 || true
}

ms() { awk -v ns="$1" -v n="${2:-1}" 'BEGIN { printf "%.2f ms", ns / n / 1e6 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# `hey` summary figures: requests/s, average, p50, p99.
hey_stats() { # hey_stats FILE
  awk '
    /Requests\/sec:/ { rps = $2 }
    /Average:/ && !avg { avg = $2 }
    $1 ~ /^50%/ { p50 = $3 }
    $1 ~ /^99%/ { p99 = $3 }
    END { printf "%.0f req/s, avg %.1f ms, p50 %.1f ms, p99 %.1f ms", rps, avg * 1000, p50 * 1000, p99 * 1000 }
  ' "$1"
}
hey_errors() { # non-2xx responses and transport errors
  awk '/Status code distribution:/ { s = 1; next } s && /\[[0-9]+\]/ { code = substr($1, 2, 3); if (code !~ /^2/) bad += $2 } /Error distribution:/ { e = 1; next } e && /\[[0-9]+\]/ { bad += substr($1, 2) } END { print bad + 0 }' "$1"
}
secs() { awk -v ns="$1" 'BEGIN { printf "%.1f s", ns / 1e9 }'; }
field() { grep "^$1|" "$2" | head -1 | cut -d'|' -f2-; }

start_gate() { # start_gate BIN NAMESPACE EXTRA... -> sets GATE_PORT, GATE_PID, METRICS_PORT
  # (as the user of $GATE_KUBECONFIG when set, else the stack's admin)
  GATE_PORT="$(free_port)"; METRICS_PORT="$(free_port)"
  # One log per namespace, every start appended: a bench's phases stay readable afterwards.
  echo "----- $(date -u +%FT%TZ) serve ${*:3}" >> "$OUT/gate-$2.log"
  KUBECONFIG="${GATE_KUBECONFIG:-$KUBECONFIG}" "$1" serve --connect-url "$CONNECT_URL" --namespace "$2" --vars-dir "$VARS" --env-file "$ENV_FILE" \
    --tls-cert "$OUT/certs/tls.crt" --tls-key "$OUT/certs/tls.key" \
    --listen "127.0.0.1:$GATE_PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" \
    "${@:3}" >> "$OUT/gate-$2.log" 2>&1 &
  GATE_PID=$!
  echo "$GATE_PID" >> "$OUT/gate.pids"
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$METRICS_PORT/readyz" > /dev/null && return 0
    sleep 0.1
  done
  die "connect-gate did not become ready (see $OUT/gate-$2.log)"
}
stop_gate() { kill "$GATE_PID" 2>/dev/null || true; wait "$GATE_PID" 2>/dev/null || true; }

register() { # register NAME NAMESPACE [FILE...]: webhook/*.yaml as shipped (match conditions
  # included), pointed at this gate and selecting NAMESPACE, whose ServiceAccount connect-gate
  # stands for the shipped one in connect
  local name="$1" ns="$2" file path
  shift 2
  local files=("$@")
  [ ${#files[@]} -gt 0 ] || files=(validating.yaml mutating.yaml)
  for file in "${files[@]}"; do
    path=/validate; [ "$file" = mutating.yaml ] && path=/mutate
    kubectl create --dry-run=client -o json -f "webhook/$file" |
      jq --arg name "$name" --arg url "https://127.0.0.1:$GATE_PORT$path" --arg ca "$CA_B64" --arg ns "$ns" '
        .metadata = {name: $name}
        | .webhooks[] |= (.clientConfig = {url: $url, caBundle: $ca} | .namespaceSelector.matchExpressions[0].values = [$ns]
          | .matchConditions |= (. // [] | map(.expression |= gsub("serviceaccount:connect:"; "serviceaccount:" + $ns + ":"))))' |
      kubectl apply -f - > /dev/null
  done
}
sa_kubeconfig() { # sa_kubeconfig NAMESPACE -> a kubeconfig for its ServiceAccount connect-gate,
  # with deploy/'s rights there: the sidecar runs as it does when deployed
  local ns="$1" kc="$OUT/kubeconfig-$1" token
  kubectl -n "$ns" create serviceaccount connect-gate > /dev/null
  kubectl -n "$ns" create role connect-gate --verb=get,list,watch,patch --resource=configmaps > /dev/null
  kubectl -n "$ns" create role connect-gate-records --verb=get,create,update --resource=leases.coordination.k8s.io > /dev/null
  kubectl -n "$ns" create role connect-gate-events --verb=create,patch --resource=events.events.k8s.io > /dev/null
  local role
  for role in connect-gate connect-gate-records connect-gate-events; do
    kubectl -n "$ns" create rolebinding "$role" --role="$role" --serviceaccount="$ns:connect-gate" > /dev/null
  done
  token="$(kubectl -n "$ns" create token connect-gate --duration 2h)"
  cp "$KUBECONFIG" "$kc"
  KUBECONFIG="$kc" kubectl config set-credentials connect-gate --token="$token" > /dev/null
  KUBECONFIG="$kc" kubectl config set-context --current --user=connect-gate > /dev/null
  echo "$kc"
}
unregister() { # unregister NAME
  kubectl delete validatingwebhookconfiguration,mutatingwebhookconfiguration "$1" --ignore-not-found > /dev/null
}

dry_run() { # dry_run NAMESPACE LABELLED(true|false) N C FILE
  jq -n --arg ns "$1" --arg t "$TEMPLATE" --argjson labelled "$2" '{apiVersion: "v1", kind: "ConfigMap",
    metadata: ({name: "dry-run", namespace: $ns} + (if $labelled then {labels: {destination: "connect"}} else {} end)),
    data: {"c.json": $t}}' > "$OUT/dry-run-body.json"
  "$HEY" -n "$3" -c "$4" -m POST -T application/json -H "Authorization: Bearer $TOKEN" -D "$OUT/dry-run-body.json" \
    "$KUBE_APISERVER_URL/api/v1/namespaces/$1/configmaps?dryRun=All" > "$5"
}

wait_running() { # wait_running PREFIX COUNT -> seconds waited (bounded: 10 minutes)
  local t0=$(date +%s%N)
  for _ in $(seq 1 1200); do
    [ "$(curl -sf "$CONNECT_URL/connectors?expand=status" | jq --arg p "$1-" '[to_entries[] | select(.key | startswith($p)) | select(.value.status.connector.state == "RUNNING")] | length')" -ge "$2" ] && break
    sleep 0.5
  done
  echo $(( $(date +%s%N) - t0 ))
}
delete_connectors() { # delete_connectors PREFIX (four at a time)
  curl -sf "$CONNECT_URL/connectors" | jq -r --arg p "$1-" '.[] | select(startswith($p))' |
    xargs -r -P 4 -I{} curl -sf -o /dev/null -X DELETE "$CONNECT_URL/connectors/{}" || true
}
rest_calls() { # rest_calls METHOD-REGEX: Connect REST calls the sidecar made so far
  curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" |
    awk -v m="$1" '/^connect_gate_rest_calls_total/ && $0 ~ "method=\"(" m ")\"" { s += $NF } END { print s + 0 }'
}

admission_time() { # admission_time: "sum count" of the sidecar's admission_duration_seconds
  curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" |
    awk '/^connect_gate_admission_duration_seconds_sum/ { s = $NF } /^connect_gate_admission_duration_seconds_count/ { c = $NF } END { print s + 0, c + 0 }'
}
mean_since() { # mean_since "SUM COUNT": the sidecar's mean time per admission since then
  local now; now="$(admission_time)"
  awk -v a="$1" -v b="$now" 'BEGIN { split(a, x, " "); split(b, y, " "); n = y[2] - x[2]; printf "%.2f ms", n ? (y[1] - x[1]) / n * 1000 : 0 }'
}
