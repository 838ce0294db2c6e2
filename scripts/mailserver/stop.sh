#!/usr/bin/env bash
# Stops the Postfix + Dovecot that scripts/mailserver/start.sh <root-dir> started, and waits until both master
# processes have exited (so a following start.sh does not see them as still running). Harmless when nothing runs.
# Leaves <root-dir> (mail, logs, configs) in place; delete it yourself when done.
#
# Both masters get SIGTERM at once, which is what `postfix stop` and `doveadm stop` send; Dovecot's master takes
# about 3 s to exit, Postfix's well under 1 s. MS_STOP_TIMEOUT (default 15) bounds the wait, in seconds.
set -euo pipefail

[ $# -eq 1 ] && [ -n "$1" ] || {
  echo "usage: $0 <root-dir>" >&2
  exit 2
}
[ -d "$1" ] || exit 0
ROOT="$(cd "$1" && pwd -P)"
STOP_TIMEOUT="${MS_STOP_TIMEOUT:-15}"

# master_pid <pid-file> <program>: the pid in the file if that process is alive and runs <program>, else nothing.
master_pid() {
  local pid
  pid="$(tr -d ' \n' 2>/dev/null <"$1" || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  # Guard against a stale pid file whose pid now belongs to another process.
  grep -qa "$2" "/proc/$pid/cmdline" 2>/dev/null || return 0
  echo "$pid"
}

pids=()
names=()
postfix_pid="$(master_pid "$ROOT/spool/pid/master.pid" postfix)"
dovecot_pid="$(master_pid "$ROOT/run/dovecot/master.pid" dovecot)"
if [ -n "$postfix_pid" ]; then
  pids+=("$postfix_pid")
  names+=(postfix)
fi
if [ -n "$dovecot_pid" ]; then
  pids+=("$dovecot_pid")
  names+=(dovecot)
fi
[ "${#pids[@]}" -gt 0 ] || exit 0

kill -TERM "${pids[@]}" 2>/dev/null || true
deadline=$((SECONDS + STOP_TIMEOUT))
status=0
for i in "${!pids[@]}"; do
  while kill -0 "${pids[$i]}" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "mailserver stop: ${names[$i]} master ${pids[$i]} still running after ${STOP_TIMEOUT}s" >&2
      status=1
      break
    fi
    sleep 0.05
  done
done
exit "$status"
