#!/usr/bin/env bash
# Installs the Debian packages of the real mail server the e2e suite runs against (Postfix + Dovecot LMTP, the two
# components of docker-mailserver the worker talks to, and Dovecot's Sieve plugin, which runs the shipped
# docker/mailserver/before.dovecot.sieve as docker-mailserver does). Non-interactive, idempotent: does nothing when every
# package is already installed. Needs root (apt-get); Debian 12 or later.
#
# MS_SKIP_APT_UPDATE=1 skips `apt-get update` (the caller just ran it).
#
# Nothing in /etc is configured: scripts/mailserver/start.sh writes its own configs into a directory of its own.
# The "No configuration" preseed keeps the postfix package from creating /etc/postfix/main.cf and /etc/mailname,
# and on machines with a policy-rc.d that forbids it, the packages' postinst scripts start no service.
set -euo pipefail

PACKAGES=(postfix dovecot-core dovecot-lmtpd dovecot-sieve)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)" != installed ]; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "mailserver install: ${PACKAGES[*]} already installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "mailserver install: ${missing[*]} missing and not running as root; run: sudo $0" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "mailserver install: installing ${missing[*]}"
[ "${MS_SKIP_APT_UPDATE:-0}" = 1 ] || apt-get update -qq
echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
# Keep the packages' postinst scripts from starting system-wide daemons (Dovecot would listen on 143/110): our
# servers are started by start.sh only. Container images usually ship such a policy-rc.d already.
guard=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  guard=/usr/sbin/policy-rc.d
  printf '#!/bin/sh\nexit 101\n' >"$guard"
  chmod 0755 "$guard"
  trap 'rm -f "$guard"' EXIT
fi
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
for bin in /usr/sbin/postfix /usr/sbin/dovecot /usr/bin/doveadm; do
  [ -x "$bin" ] || { echo "mailserver install: $bin missing after install" >&2; exit 1; }
done
echo "mailserver install: done: $(dpkg-query -W -f='${Package} ${Version}  ' "${PACKAGES[@]}")"
