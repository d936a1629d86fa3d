#!/bin/bash
# Runs inside the guest, as root, under systemd (PID 1): installs execgw with
# README.md's commands (install.sh, taken from the README by test/guest/run),
# then runs each check. Output: one "PASS name" or "FAIL name" line per check
# (a failure followed by its evidence), "METRIC" lines, then the journal.
set -u
cd /payload
export SYSTEMD_PAGER= SYSTEMD_COLORS=0
api=http://127.0.0.1:8080
unit=execgw.service
cg=/sys/fs/cgroup/system.slice/execgw.service
failures=0

# run NAME [QUERY]: a bound JSON run; prints the job record.
run() { curl -sS --fail-with-body --max-time 120 -X POST "$api/v1/commands/$1/run${2:+?$2}"; }
# detach NAME [QUERY]: a detached job; prints its id.
detach() {
  curl -sS --fail --max-time 30 -o /dev/null -D - -H 'Prefer: respond-async' -X POST "$api/v1/commands/$1/run${2:+?$2}" |
    tr -d '\r' | awk 'tolower($1) == "execgw-job-id:" {print $2}'
}
job() { curl -sS --fail --max-time 30 "$api/v1/jobs/$1"; }
field() { jq -r "$1"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
active() { [ "$(systemctl is-active "$1")" = "$2" ]; }
# until SECONDS CMD...: CMD succeeds within SECONDS (polled every 0.2 s).
until_ok() {
  local end=$((SECONDS + $1)); shift
  while [ "$SECONDS" -lt "$end" ]; do "$@" && return 0; sleep 0.2; done
  "$@"
}
running_jobs() { curl -sS --max-time 10 "$api/v1/jobs?state=running" | jq '.jobs | length'; }
has_running() { [ "$(running_jobs)" -ge 1 ]; }
no_proc() { not pgrep -f "$1"; }
# not CMD...: fails when CMD succeeds (set -e ignores a "!" pipeline).
not() { if "$@" >/dev/null; then echo "unexpectedly true: $*"; return 1; fi; }
# Everything still in the service's cgroup tree (empty when nothing is left).
cgroup_procs() { [ -d "$cg" ] && find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null || true; }

check() {
  local name=$1 out rc start=$SECONDS
  out=$(set -eE; trap 'echo "failed at line $LINENO: $BASH_COMMAND"' ERR; "check_$name" 2>&1)
  rc=$?
  if [ "$rc" = 0 ]; then
    echo "PASS $name ($((SECONDS - start)) s)"
    printf '%s\n' "$out" | grep '^METRIC ' || true
  else
    echo "FAIL $name ($((SECONDS - start)) s)"
    printf '%s\n' "$out" | tail -n 40 | sed 's/^/    /'
    failures=$((failures + 1))
  fi
}

check_install() {
  bash -ex install.sh
}

check_activation() {
  [ "$(systemctl is-enabled execgw.socket)" = enabled ]
  systemctl stop "$unit"
  until_ok 60 active "$unit" inactive
  active execgw.socket active
  [ "$(systemctl show -p Type --value "$unit")" = notify ]
  local t0 t1
  t0=$(now_ms)
  curl -sS --fail --max-time 60 "$api/healthz" >/dev/null
  t1=$(now_ms)
  echo "METRIC cold_start_ms $((t1 - t0)) (connection to first response, /healthz, the service stopped before)"
  # Type=notify: the unit becomes active on READY=1, which the gateway sends
  # once it serves; activating until then.
  active "$unit" active
  local started ready
  started=$(systemctl show -p ExecMainStartTimestampMonotonic --value "$unit")
  ready=$(systemctl show -p ActiveEnterTimestampMonotonic --value "$unit")
  echo "exec at $started us, active at $ready us"
  [ "$ready" -gt "$started" ]
  # The passed socket and systemd's variables never reach a command.
  local rec out
  rec=$(run env)
  jq -c 'del(.stdout)' <<<"$rec"
  [ "$(field .state <<<"$rec")" = succeeded ]
  out=$(field .stdout <<<"$rec")
  echo "$out"
  not grep -q 'socket:' <<<"$out"
  not grep -q -e '^LISTEN_' -e '^NOTIFY_SOCKET' -e '^INVOCATION_ID' <<<"$out"
}

check_idle_exit() {
  local rec id pid1 pid2 t0 t1
  rec=$(run sleep seconds=0)
  id=$(field .id <<<"$rec")
  t0=$(now_ms)
  pid1=$(systemctl show -p MainPID --value "$unit")
  until_ok 60 active "$unit" inactive
  t1=$(now_ms)
  echo "METRIC idle_exit_stop_ms $((t1 - t0)) (last response to the service inactive, idle_exit 4s)"
  [ "$(systemctl show -p Result --value "$unit")" = success ]
  active execgw.socket active
  t0=$(now_ms)
  rec=$(job "$id")
  t1=$(now_ms)
  echo "METRIC idle_restart_ms $((t1 - t0)) (after an idle exit: connection to first response, a job read)"
  [ "$(field .state <<<"$rec")" = succeeded ]
  pid2=$(systemctl show -p MainPID --value "$unit")
  echo "instances $pid1 then $pid2"
  [ "$pid1" != "$pid2" ]
}

check_idle_client() {
  # Requests spaced around idle_exit (4s), so that several land while an
  # instance exits or before the next one serves: none may fail.
  local ids=() i rec
  for i in 1 2 3 4 5 6; do
    rec=$(run sleep seconds=0)
    [ "$(field .state <<<"$rec")" = succeeded ]
    ids+=("$(systemctl show -p InvocationID --value "$unit")")
    sleep "$(( (i % 3) + 3 )).$((i * 17 % 10))"
  done
  local n
  n=$(printf '%s\n' "${ids[@]}" | sort -u | wc -l)
  echo "instances served: $n of ${#ids[@]} requests"
  [ "$n" -ge 3 ]
}

check_drain_stop() {
  local t0 t1 out=/tmp/short.json
  run sleep seconds=3 > "$out" & local client=$!
  until_ok 30 has_running
  t0=$(now_ms); systemctl stop "$unit"; t1=$(now_ms)
  wait "$client"
  echo "short: stop took $((t1 - t0)) ms; $(cat "$out")"
  [ "$(field .state < "$out")" = succeeded ]
  run sleep seconds=120 > "$out" & client=$!
  until_ok 30 has_running
  t0=$(now_ms); systemctl stop "$unit"; t1=$(now_ms)
  wait "$client"
  echo "long: stop took $((t1 - t0)) ms; $(cat "$out")"
  [ "$(field .state < "$out")" = canceled ]
  [ "$(field .cancel_reason < "$out")" = shutdown ]
  # shutdown_grace 3s, kill_grace 1s; TimeoutStopSec 45s.
  [ $((t1 - t0)) -ge 2900 ]
  [ $((t1 - t0)) -lt 45000 ]
  [ "$(systemctl show -p Result --value "$unit")" = success ]
  [ -z "$(cgroup_procs)" ]
  active execgw.socket active
}

check_drain_restart() {
  local t0 t1 out=/tmp/restart.json
  curl -sS --fail --max-time 60 "$api/healthz" >/dev/null
  run sleep seconds=120 > "$out" & local client=$!
  until_ok 30 has_running
  t0=$(now_ms); systemctl restart "$unit"; t1=$(now_ms)
  wait "$client"
  echo "restart took $((t1 - t0)) ms; $(cat "$out")"
  [ "$(field .state < "$out")" = canceled ]
  [ "$(field .cancel_reason < "$out")" = shutdown ]
  [ $((t1 - t0)) -lt 45000 ]
  active "$unit" active
  [ "$(field .state <<<"$(run sleep seconds=0)")" = succeeded ]
}

check_delegation() {
  curl -sS --fail --max-time 60 "$api/healthz" >/dev/null
  local line
  line=$(journalctl -u "$unit" -o cat --no-pager | grep '"containment"' | tail -n 1)
  echo "$line"
  jq -e --arg cg "$cg" '.containment | startswith("cgroups in " + $cg)' <<<"$line"
  local id pid
  id=$(detach escapee)
  until_ok 30 pgrep -f '^sleep 421'
  pid=$(pgrep -f '^sleep 421')
  echo "escapee $pid in $(cat /proc/$pid/cgroup); session $(ps -o sid= -p $pid), job pid $(job "$id" | field .pid)"
  grep -q "^0::/system.slice/execgw.service/." /proc/$pid/cgroup
  local rec
  rec=$(curl -sS --fail --max-time 60 -X POST "$api/v1/jobs/$id/cancel")
  [ "$(field .state <<<"$rec")" = canceled ]
  until_ok 10 no_proc '^sleep 42[12]'
}

check_pids_max() {
  local rec
  rec=$(run bomb)
  echo "$rec" | jq -c 'del(.stdout, .stderr)'
  [ "$(field .limit <<<"$rec")" = pids_max ]
  curl -sS --fail --max-time 30 "$api/healthz"
  [ "$(field .state <<<"$(run sleep seconds=0)")" = succeeded ]
}

check_cpu_max() {
  local rec
  rec=$(run spin)
  echo "$rec" | jq -c .
  local throttled
  throttled=$(field .stdout <<<"$rec" | awk '$1 == "nr_throttled" {print $2}')
  [ "${throttled:-0}" -gt 0 ]
  field .cpu_time_ms <<<"$rec" | grep -qE '^[0-9]+$'
  field .memory_peak_bytes <<<"$rec" | grep -qE '^[0-9]+$'
}

check_memory_max() {
  local rec
  rec=$(run hog)
  echo "$rec" | jq -c 'del(.stdout)'
  [ "$(field .state <<<"$rec")" = failed ]
  [ "$(field .limit <<<"$rec")" = memory_max ]
  [ "$(field .memory_peak_bytes <<<"$rec")" -gt 0 ]
  curl -sS --fail --max-time 30 "$api/healthz"
}

check_crash() {
  local id
  id=$(detach escapee)
  until_ok 30 pgrep -f '^sleep 421'
  systemctl kill -s KILL "$unit"
  until_ok 10 no_proc '^sleep 42[12]'
  # Restart=on-failure, or the next connection through the socket.
  until_ok 60 active "$unit" active || true
  local rec
  rec=$(until_ok 60 job "$id")
  echo "$rec" | jq -c .
  [ "$(field .state <<<"$rec")" = interrupted ]
  active "$unit" active
  echo "restarts: $(systemctl show -p NRestarts --value "$unit")"
}

check_sandbox() {
  mkdir -p /home/alice /srv/backups && touch /home/alice/secret && chown execgw:execgw /srv/backups
  local rec
  rec=$(run write path=/etc); echo "$rec" | jq -c .
  [ "$(field .exit_code <<<"$rec")" != 0 ]
  [ ! -e /etc/guest-test ]
  rec=$(run write path=/srv/backups); echo "$rec" | jq -c .
  [ "$(field .exit_code <<<"$rec")" != 0 ]
  [ ! -e /srv/backups/guest-test ]
  rec=$(run write path=/var/lib/execgw); echo "$rec" | jq -c .
  [ "$(field .exit_code <<<"$rec")" = 0 ]
  rec=$(run home); echo "$rec" | jq -c .
  [ "$(field .stdout <<<"$rec" | grep -c alice || true)" = 0 ]
  # What `systemctl edit execgw.service` writes, as the README says.
  mkdir -p /etc/systemd/system/execgw.service.d
  printf '[Service]\nReadWritePaths=/srv/backups\n' > /etc/systemd/system/execgw.service.d/override.conf
  systemctl daemon-reload
  systemctl restart "$unit"
  rec=$(run write path=/srv/backups); echo "$rec" | jq -c .
  [ "$(field .exit_code <<<"$rec")" = 0 ]
  [ -e /srv/backups/guest-test ]
}

check_journal() {
  local msgs n bad
  msgs=$(journalctl -u "$unit" -o json --no-pager | jq -r 'select(._COMM == "execgw") | .MESSAGE')
  n=$(wc -l <<<"$msgs")
  bad=$(jq -R -r 'try (fromjson | if type == "object" then empty else "not an object: \(.)" end) catch "not JSON"' <<<"$msgs")
  echo "$n lines from the gateway"
  [ -z "$bad" ] || echo "$bad"
  [ -z "$bad" ]
  [ "$n" -ge 20 ]
}

echo "guest: $(uname -r), systemd $(systemctl --version | head -n 1 | cut -d' ' -f2), cgroup controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
check install
if [ "$failures" = 0 ]; then
  for c in activation idle_exit idle_client drain_stop drain_restart delegation pids_max cpu_max memory_max crash sandbox journal; do
    check "$c"
  done
fi
echo "== journalctl -u execgw (last 60 lines)"
journalctl -u "$unit" -o cat --no-pager | tail -n 60
exit $((failures > 0))
