#!/usr/bin/env bash
# Starts a real Postfix + Dovecot (the two docker-mailserver components the worker talks to) on 127.0.0.1, entirely
# inside <root-dir>: configs, queue, logs, runtime files and Maildirs. Nothing in /etc is read or written (Postfix
# still finds its programs through the compiled-in daemon_directory/meta_directory).
#
#   scripts/mailserver/start.sh <root-dir>     # idempotent: re-running leaves a running server running
#   scripts/mailserver/stop.sh  <root-dir>
#
# Ports (environment, all on 127.0.0.1). The defaults are docker-mailserver's ports (25, 587, 2526, 2525, 24) plus
# 12000, so they do not collide with a real mail server or a docker-mailserver container on the developer's machine:
#   MS_WORKER_PORT     (default 14526)  Postfix smtpd for the worker's mailbox deliveries (SMTP_PORT, 2526)
#   MS_INTERNAL_PORT   (default 12525)  Postfix smtpd for the worker's internal port 2525 (INTERNAL_SMTP_PORT)
#   MS_LMTP_PORT       (default 12024)  Dovecot LMTP, stands in for port 24 (LMTP_PORT)
#   MS_SMTP_PORT       (default 12025)  Postfix smtpd, stands in for docker-mailserver's port 25 (everyone else)
#   MS_SUBMISSION_PORT (default 12587)  Postfix smtpd through docker-mailserver's sender-cleanup, stands in for
#                                       submission (587; no authentication or TLS on loopback)
#   MS_START_TIMEOUT   (default 30)     seconds to wait for all five ports to accept connections
#   MS_DEDUP           (default 1)      0 leaves out docker/mailserver/before.dovecot.sieve (to measure what it saves)
# The e2e suite (test/e2e) picks free ports itself, so it runs beside a server started with the defaults.
#
# Mail setup:
#   virtual domains example.com and another.com; mailboxes alice@example.com, bob@example.com, tiny@example.com,
#   carol@another.com, delivered by Postfix over LMTP to Dovecot into <root-dir>/mail/<domain>/<user>/{new,cur,tmp}.
#   Every Postfix port checks recipients against the mailbox list at RCPT (unknown user: 550 5.1.1), like
#   docker-mailserver does; Dovecot LMTP checks its userdb (unknown user: 550 5.1.1).
#   The worker's two ports are configured by the project's own docker/mailserver/user-patches.sh (the production
#   patch of docker-mailserver), applied to this configuration, which mirrors docker-mailserver's master.cf where the
#   patch acts on it: a sender-cleanup service with header_checks of its own for submission, and pickup (sendmail)
#   with receive_override_options=no_header_body_checks. Mail to the port-25, submission and sendmail stand-ins loses
#   any X-SES-Worker-Delivery-Id field; the worker's ports keep it.
#   Test hooks on the worker's SMTP port and port 25 (check_recipient_access): busy@example.com gets 451 4.2.1,
#   full@example.com 452 4.2.2, gone@example.com 550 5.1.1.
#   Content rejection hooks, after DATA: Postfix rejects a mail with an `X-E2E-Reject:` header field
#   (header_checks: 550 5.7.1); Dovecot answers 552 5.2.2 (quota) for every mail over 1 KB to tiny@example.com.
#   Dovecot runs the Sieve plugin for LMTP with the project's docker/mailserver/before.dovecot.sieve as a global
#   sieve_before script (compiled with sievec, as docker-mailserver does) and the `plugin` block of
#   docker/mailserver/dovecot.cf (all but its listener): a second copy of a delivery the worker marked with
#   X-SES-Worker-Delivery-Id is discarded. Sieve logs every delivery (`sieve: msgid=...: stored mail into
#   mailbox`) and every discard.
#   Nothing is ever relayed out: other domains get 554 Relay access denied, and every non-virtual transport is
#   error:. No DNS is used.
#   Deferred mail is retried every 5 s (defaults: minutes).
#   Dovecot stores messages with CRLF line endings (mail_save_crlf = yes), so a Maildir file holds the delivered
#   bytes unchanged after the trace headers Postfix/Dovecot add (Return-Path, Delivered-To, Received).
#
# Logs: <root-dir>/log/postfix.log, <root-dir>/log/dovecot.log, and the daemons' own output in
# <root-dir>/log/start.log.
# Requirements: root (Postfix's master runs as root and drops privileges), the packages from install.sh, and a
# <root-dir> that the users mail (uid 8), postfix and dovecot can traverse: the script makes <root-dir> mode 0755,
# but its parent directories must allow it too (/tmp does). Mailbox files belong to mail (uid 8) with mode 0600, so
# only root (or uid 8) can read them.
#
# On success prints the endpoints as shell assignments (also written to <root-dir>/ports.env):
#   MS_ROOT=... MS_HOST=127.0.0.1 MS_SMTP_PORT=... MS_WORKER_PORT=... MS_SUBMISSION_PORT=... MS_INTERNAL_PORT=...
#   MS_LMTP_PORT=...
set -euo pipefail

usage() {
  echo "usage: $0 <root-dir>" >&2
  exit 2
}
[ $# -eq 1 ] || usage
[ -n "$1" ] || usage

SMTP_PORT="${MS_SMTP_PORT:-12025}"
WORKER_PORT="${MS_WORKER_PORT:-14526}"
SUBMISSION_PORT="${MS_SUBMISSION_PORT:-12587}"
INTERNAL_PORT="${MS_INTERNAL_PORT:-12525}"
LMTP_PORT="${MS_LMTP_PORT:-12024}"
START_TIMEOUT="${MS_START_TIMEOUT:-30}"
HOST=127.0.0.1
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
PATCHES="$SCRIPT_DIR/../../docker/mailserver/user-patches.sh"
DEDUP_SIEVE="$SCRIPT_DIR/../../docker/mailserver/before.dovecot.sieve"
DOVECOT_CF="$SCRIPT_DIR/../../docker/mailserver/dovecot.cf"
DEDUP="${MS_DEDUP:-1}"

die() {
  echo "mailserver start: $*" >&2
  exit 1
}

ALL_PORTS=("$SMTP_PORT" "$WORKER_PORT" "$SUBMISSION_PORT" "$INTERNAL_PORT" "$LMTP_PORT")
for port in "${ALL_PORTS[@]}"; do
  [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "invalid port '$port'"
done
[ "$(printf '%s\n' "${ALL_PORTS[@]}" | sort -u | wc -l)" -eq "${#ALL_PORTS[@]}" ] ||
  die "MS_SMTP_PORT, MS_WORKER_PORT, MS_SUBMISSION_PORT, MS_INTERNAL_PORT and MS_LMTP_PORT must differ"
[ "$(id -u)" -eq 0 ] || die "must run as root (Postfix's master process needs it)"
export PATH="$PATH:/usr/sbin:/sbin"
for bin in postfix postconf dovecot doveadm sievec; do
  command -v "$bin" >/dev/null 2>&1 || die "$bin not found; run scripts/mailserver/install.sh"
done
[ -f "$PATCHES" ] || die "$PATCHES not found (the internal port's configuration)"
[ -f "$DEDUP_SIEVE" ] && [ -f "$DOVECOT_CF" ] || die "$DEDUP_SIEVE or $DOVECOT_CF not found"
[ "$DEDUP" = 0 ] || [ "$DEDUP" = 1 ] || die "MS_DEDUP must be 0 or 1"

mkdir -p "$1"
ROOT="$(cd "$1" && pwd -P)"
# Postfix's main.cf has no quoting: a path with whitespace (or a comma, which splits list values) cannot be written.
[[ "$ROOT" =~ ^[A-Za-z0-9/._+-]+$ ]] || die "root dir '$ROOT' must consist of [A-Za-z0-9/._+-] only"

PF_CONF="$ROOT/etc/postfix"
PF_STAGE="$ROOT/etc/postfix.staging"
DC_CONF="$ROOT/etc/dovecot"
DC_PID="$ROOT/run/dovecot/master.pid"
SIEVE_BEFORE="$ROOT/etc/dovecot/sieve-before"

# --- directories -----------------------------------------------------------------------------------------------------
chmod 0755 "$ROOT"
# Postfix does not create queue_directory itself; it must belong to root (postfix creates the subdirectories).
mkdir -p "$PF_CONF" "$DC_CONF" "$ROOT/log" "$ROOT/run" "$ROOT/spool" "$ROOT/mail"
chmod 0755 "$ROOT/etc" "$PF_CONF" "$DC_CONF" "$ROOT/log" "$ROOT/run" "$ROOT/spool"
chown root:root "$ROOT/spool"
chown mail:mail "$ROOT/mail"
chmod 0750 "$ROOT/mail"
if command -v setpriv >/dev/null 2>&1; then
  setpriv --reuid=mail --regid=mail --clear-groups test -x "$ROOT/mail" ||
    die "user mail cannot reach $ROOT/mail: a parent directory of $ROOT is not traversable (o+x) by other users"
fi

# --- configs (rewritten on every run; a running server reloads only when they changed) -------------------------------
CHANGED_POSTFIX=0
CHANGED_DOVECOT=0

# install_file <new> <path> <flag-var>: moves <new> to <path> (mode 0644) when the content differs and sets
# <flag-var>=1; otherwise deletes <new>.
install_file() {
  local new="$1" path="$2" flag="$3"
  chmod 0644 "$new"
  if [ -f "$path" ] && cmp -s "$new" "$path"; then
    rm -f "$new"
  else
    # Postfix waits (up to ~1.5 s per file, in 300 ms steps) while a config file's mtime is not yet in the past, in
    # case it is still being written: backdate the fresh file.
    touch -d "@$((EPOCHSECONDS - 2))" "$new"
    mv -f "$new" "$path"
    printf -v "$flag" 1
  fi
}

# write_file <path> <flag-var>: install_file with the content of stdin.
write_file() {
  local tmp
  tmp="$(mktemp "$1.XXXXXX")"
  cat >"$tmp"
  install_file "$tmp" "$1" "$2"
}

# Postfix's files are put together in a staging directory (user-patches.sh edits master.cf there with postconf),
# then installed one by one, so that a re-run with the same settings changes nothing and causes no reload.
rm -rf "$PF_STAGE"
mkdir -p "$PF_STAGE"

cat >"$PF_STAGE/main.cf" <<EOF
# Written by scripts/mailserver/start.sh: a loopback-only stand-in for docker-mailserver's Postfix.
# (Postfix treats '#' as a comment only at the start of a line.)
compatibility_level = 3.6
queue_directory = $ROOT/spool
data_directory = $ROOT/data
# No syslog daemon: log to a file, through the postlog service in master.cf.
maillog_file = $ROOT/log/postfix.log
maillog_file_prefixes = $ROOT/log
# Explicit identity: no /etc/mailname, no DNS.
myhostname = mail.example.test
mydomain = example.test
myorigin = \$myhostname
inet_interfaces = $HOST
inet_protocols = ipv4
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_host_lookup = native
# No local delivery, and nothing can ever leave the box.
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 local delivery disabled
default_transport = error:5.7.1 outbound mail disabled
relay_transport = error:5.7.1 outbound relay disabled
relay_domains =
alias_maps =
alias_database =
virtual_mailbox_domains = example.com, another.com
virtual_mailbox_maps = texthash:$PF_CONF/vmailbox
virtual_transport = lmtp:inet:$HOST:$LMTP_PORT
recipient_delimiter = +
# Not permit_mynetworks: 127.0.0.0/8 is in mynetworks, so loopback clients could relay out.
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access texthash:$PF_CONF/rcpt_access
# Test hook: a content rejection after DATA (what a spam or virus filter answers).
header_checks = regexp:$PF_CONF/header_checks
# The worker reaches docker-mailserver from another container, i.e. as a remote client, for which Postfix neither
# adds missing Date/Message-ID headers nor rewrites header addresses. Treat our loopback client the same way.
local_header_rewrite_clients =
smtpd_tls_security_level = none
smtp_tls_security_level = none
lmtp_tls_security_level = none
# Fast retry of deferred mail (defaults 300s/300s/4000s).
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 30s
# As docker-compose.yml sets POSTFIX_MESSAGE_SIZE_LIMIT; above the worker's MAX_MAIL_BYTES (40 MiB) plus headers.
message_size_limit = 52428800
biff = no
EOF

cat >"$PF_STAGE/master.cf" <<EOF
# Written by scripts/mailserver/start.sh, then the worker's ports added by docker/mailserver/user-patches.sh.
# Every service runs unchrooted (no copies of /etc files needed). A bare port listens on inet_interfaces only.
# service type  private unpriv  chroot  wakeup  maxproc command
$SMTP_PORT inet n - n - - smtpd
  -o syslog_name=postfix/smtp-$SMTP_PORT
# As docker-mailserver's submission (587), without SASL and TLS: a cleanup service with header checks of its own.
$SUBMISSION_PORT inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o cleanup_service_name=sender-cleanup
sender-cleanup unix n   -       n       -       0       cleanup
  -o syslog_name=postfix/sender-cleanup
  -o header_checks=regexp:$PF_CONF/sender_header_filter
# As docker-mailserver's pickup (sendmail): no content filter, no header or body checks.
pickup    fifo  n       -       n       60      1       pickup
  -o content_filter=
  -o receive_override_options=no_header_body_checks
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF

cat >"$PF_STAGE/vmailbox" <<'EOF'
alice@example.com OK
bob@example.com OK
tiny@example.com OK
carol@another.com OK
EOF

cat >"$PF_STAGE/rcpt_access" <<'EOF'
busy@example.com 451 4.2.1 Mailbox temporarily unavailable (simulated)
full@example.com 452 4.2.2 Mailbox full (simulated)
gone@example.com 550 5.1.1 Mailbox gone (simulated)
EOF

cat >"$PF_STAGE/header_checks" <<'EOF'
/^X-E2E-Reject:/ REJECT 5.7.1 Message content rejected (simulated)
EOF

# A stand-in for docker-mailserver's sender_header_filter.pcre (this Postfix may have no PCRE tables).
cat >"$PF_STAGE/sender_header_filter" <<'EOF'
/^X-Originating-IP:/ IGNORE
EOF

# The worker's ports, exactly as production gets them (syslog names postfix/worker and postfix/internal). The patch
# names its own table by the directory it patches: moved to $PF_CONF with the rest.
POSTFIX_CONFIG_DIR="$PF_STAGE" WORKER_SMTP_PORT="$WORKER_PORT" WORKER_INTERNAL_SMTP_PORT="$INTERNAL_PORT" \
  bash "$PATCHES" </dev/null >>"$ROOT/log/start.log" 2>&1 ||
  die "$PATCHES failed (see $ROOT/log/start.log)"
sed -i "s#$PF_STAGE/#$PF_CONF/#g" "$PF_STAGE/main.cf" "$PF_STAGE/master.cf"

for file in main.cf master.cf vmailbox rcpt_access header_checks sender_header_filter \
  unified-worker-delivery-id.regexp; do
  install_file "$PF_STAGE/$file" "$PF_CONF/$file" CHANGED_POSTFIX
done
rm -rf "$PF_STAGE"

write_file "$DC_CONF/dovecot.conf" CHANGED_DOVECOT <<EOF
# Written by scripts/mailserver/start.sh: a loopback-only stand-in for docker-mailserver's Dovecot (LMTP only).
# Standalone: /etc/dovecot/conf.d is not included.
instance_name = mailserver-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)
base_dir = $ROOT/run/dovecot
state_dir = $ROOT/run/dovecot-state
protocols = lmtp
listen = $HOST
hostname = mail.example.test
log_path = $ROOT/log/dovecot.log
ssl = no
auth_mechanisms = plain
disable_plaintext_auth = no
mail_uid = mail
mail_gid = mail
# The default (500) would reject uid 8.
first_valid_uid = 8
first_valid_gid = 8
mail_location = maildir:$ROOT/mail/%d/%n
# Keep CRLF line endings in the Maildir files (Dovecot's default stores LF).
mail_save_crlf = yes
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DC_CONF/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $DC_CONF/users
  default_fields = uid=mail gid=mail home=$ROOT/mail/%d/%n/home
}
service lmtp {
  inet_listener lmtp {
    address = $HOST
    port = $LMTP_PORT
  }
}
# As in docker-mailserver: the Sieve plugin for every LMTP delivery, global scripts before the user's own.
protocol lmtp {
  mail_plugins = \$mail_plugins quota sieve
}
plugin {
  sieve_before = $SIEVE_BEFORE/
  # Quota only as a test hook: tiny@example.com (userdb quota_rule) gets a 5xx after DATA.
  quota = maildir:User quota
}
# docker/mailserver/dovecot.cf as production gets it, without its listener (this file has its own):
$(sed '/^service lmtp {/,/^}/d' "$DOVECOT_CF")
EOF

# Global Sieve scripts, compiled as docker-mailserver compiles them (the mail user cannot write compiled binaries
# next to them).
mkdir -p "$SIEVE_BEFORE"
chmod 0755 "$SIEVE_BEFORE"
if [ "$DEDUP" = 1 ]; then
  install -m 0644 "$DEDUP_SIEVE" "$SIEVE_BEFORE/50-before.dovecot.sieve"
else
  rm -f "$SIEVE_BEFORE/50-before.dovecot.sieve" "$SIEVE_BEFORE/50-before.dovecot.svbin"
fi
for script in "$SIEVE_BEFORE"/*.sieve; do
  [ -f "$script" ] || continue
  sievec -c "$DC_CONF/dovecot.conf" "$script" >>"$ROOT/log/start.log" 2>&1 ||
    die "sievec $script failed (see $ROOT/log/start.log)"
  chmod 0644 "${script%.sieve}.svbin"
done

# Dovecot reads the users file on every lookup: a change needs no reload.
write_file "$DC_CONF/users" _UNUSED <<'EOF'
alice@example.com:{PLAIN}secret::::::
bob@example.com:{PLAIN}secret::::::
tiny@example.com:{PLAIN}secret::::::userdb_quota_rule=*:storage=1K
carol@another.com:{PLAIN}secret::::::
EOF

# --- helpers ---------------------------------------------------------------------------------------------------------
port_open() {
  # A bash /dev/tcp connect; closes at once (shows up as "lost connection after CONNECT" in Postfix's log).
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

dovecot_running() {
  [ -f "$DC_PID" ] && kill -0 "$(cat "$DC_PID" 2>/dev/null)" 2>/dev/null
}

postfix_running() {
  postfix -c "$PF_CONF" status >/dev/null 2>&1
}

show_logs() {
  for log in "$ROOT/log/start.log" "$ROOT/log/dovecot.log" "$ROOT/log/postfix.log"; do
    [ -f "$log" ] && {
      echo "--- last lines of $log" >&2
      tail -n 30 "$log" >&2
    }
  done
  return 0
}

# The daemons must not inherit our stdout/stderr: a caller reading them through a pipe (a test runner, $(...))
# would otherwise wait for the daemons to exit. Their own output goes to log/start.log.

# --- port conflicts (checked before anything starts) ----------------------------------------------------------------
DOVECOT_UP=0
POSTFIX_UP=0
dovecot_running && DOVECOT_UP=1
postfix_running && POSTFIX_UP=1
if [ "$DOVECOT_UP" = 0 ] && port_open "$LMTP_PORT"; then
  die "port $LMTP_PORT (MS_LMTP_PORT) is already in use by another program"
fi
if [ "$POSTFIX_UP" = 0 ]; then
  for port in "$SMTP_PORT" "$WORKER_PORT" "$SUBMISSION_PORT" "$INTERNAL_PORT"; do
    if port_open "$port"; then die "port $port is already in use by another program"; fi
  done
fi

# --- Dovecot ---------------------------------------------------------------------------------------------------------
if [ "$DOVECOT_UP" = 1 ]; then
  if [ "$CHANGED_DOVECOT" = 1 ]; then
    doveadm -c "$DC_CONF/dovecot.conf" reload </dev/null >>"$ROOT/log/start.log" 2>&1 || die "doveadm reload failed"
  fi
else
  dovecot -c "$DC_CONF/dovecot.conf" </dev/null >>"$ROOT/log/start.log" 2>&1 || {
    show_logs
    die "dovecot failed to start"
  }
fi

# --- Postfix ---------------------------------------------------------------------------------------------------------
if [ "$POSTFIX_UP" = 1 ]; then
  if [ "$CHANGED_POSTFIX" = 1 ]; then
    postfix -c "$PF_CONF" reload </dev/null >>"$ROOT/log/start.log" 2>&1 || die "postfix reload failed"
  fi
else
  postfix -c "$PF_CONF" start </dev/null >>"$ROOT/log/start.log" 2>&1 || {
    postfix -c "$PF_CONF" check </dev/null >>"$ROOT/log/start.log" 2>&1 || true
    show_logs
    die "postfix failed to start"
  }
fi

# --- readiness -------------------------------------------------------------------------------------------------------
deadline=$((SECONDS + START_TIMEOUT))
for port in "${ALL_PORTS[@]}"; do
  until port_open "$port"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      show_logs
      die "port $port did not accept connections within ${START_TIMEOUT}s"
    fi
    sleep 0.05
  done
done

write_file "$ROOT/ports.env" _UNUSED <<EOF
MS_ROOT=$ROOT
MS_HOST=$HOST
MS_SMTP_PORT=$SMTP_PORT
MS_WORKER_PORT=$WORKER_PORT
MS_SUBMISSION_PORT=$SUBMISSION_PORT
MS_INTERNAL_PORT=$INTERNAL_PORT
MS_LMTP_PORT=$LMTP_PORT
EOF
cat "$ROOT/ports.env"
