#!/bin/bash
# unified-worker: the internal SMTP port (2525) of docker-mailserver, one LMTP delivery per recipient at a time, and
# (with SES_CONFIGURATION_SET in the mail server's environment) the SES configuration set on mail relayed to SES.
#
# docker-mailserver runs /tmp/docker-mailserver/user-patches.sh at every container start, right before it starts
# its daemons (docker-compose.yml mounts this file there). It adds a Postfix smtpd service on port 2525 that the
# worker uses for forwards and auto-replies to addresses of the hosted domains (INTERNAL_SMTP_PORT).
#
# Why not docker-mailserver's `postfix-master.cf` override file: it is applied with `postconf -P`, which only
# changes parameters of services that already exist in master.cf; for a new one Postfix just warns
# `unmatched service_name/type` and changes nothing. A new service needs `postconf -M`, hence this script.
#
# What the service does differently from port 25:
#   - content_filter=$virtual_transport: every accepted mail goes straight to the mailbox transport (Dovecot
#     LMTP), whatever transport_maps, relayhost (e.g. RELAY_HOST=SES) or the global content filter (Amavis) would
#     do with it: a forward to a local mailbox can never be relayed out through SES and come back as a loop;
#   - only hosted domains are accepted (reject_unauth_destination), unknown mailboxes get 550 at RCPT;
#   - only clients in mynetworks may connect (docker-compose.yml sets PERMIT_DOCKER=connected-networks);
#   - no milters (Rspamd/OpenDKIM/OpenDMARC), no SPF policy, postgrey or DNSBL checks: the mail was already
#     checked by SES and is being generated or forwarded by the worker itself.
# Virtual aliases (postfix-virtual.cf) still apply, but must point to local mailboxes: an alias to an outside
# address cannot be delivered through the LMTP content filter and bounces.
#
# Never publish port 2525 outside the container network.
set -euo pipefail

PORT="${WORKER_INTERNAL_SMTP_PORT:-2525}"

# POSTFIX_CONFIG_DIR lets the same script be tried against a scratch Postfix configuration.
postconf_cmd=(postconf)
if [[ -n "${POSTFIX_CONFIG_DIR:-}" ]]; then postconf_cmd+=(-c "${POSTFIX_CONFIG_DIR}"); fi

# -M replaces an entry of the same name/type, so running this at every start is idempotent.
"${postconf_cmd[@]}" -Me "${PORT}/inet=${PORT} inet n - n - - smtpd"

# Single quotes: $virtual_transport is expanded by Postfix at run time, not by this shell.
"${postconf_cmd[@]}" -Pe \
  "${PORT}/inet/syslog_name=postfix/internal" \
  "${PORT}/inet/content_filter="'$virtual_transport' \
  "${PORT}/inet/smtpd_client_restrictions=permit_mynetworks,reject" \
  "${PORT}/inet/smtpd_helo_restrictions=" \
  "${PORT}/inet/smtpd_sender_restrictions=" \
  "${PORT}/inet/smtpd_relay_restrictions=reject_unauth_destination" \
  "${PORT}/inet/smtpd_recipient_restrictions=" \
  "${PORT}/inet/smtpd_milters=" \
  "${PORT}/inet/smtpd_sasl_auth_enable=no" \
  "${PORT}/inet/smtpd_tls_security_level=none"

# One LMTP delivery per recipient at a time (recipient limit 1 turns the per-destination concurrency limit into a
# per-recipient one): Dovecot 2.3 loses the delivery-id marks of before.dovecot.sieve when two deliveries to the same
# user commit at once, and then a second copy of a mail the worker handed over twice would not be recognised.
# Different recipients are still delivered in parallel; a mail to several of them becomes one LMTP transaction each.
"${postconf_cmd[@]}" -e \
  "lmtp_destination_recipient_limit=1" \
  "lmtp_destination_concurrency_limit=1"

# Mail your users send out through SES (DEFAULT_RELAY_HOST = SES's SMTP endpoint) names the SES configuration set,
# so SES publishes its sending events (the worker's OUTBOUND_EVENTS_QUEUE: bounces of that mail can be rewritten).
# SES takes the set from the header X-SES-CONFIGURATION-SET; Postfix's SMTP client prepends it to every mail it
# sends out (smtp_header_checks apply to relayed mail only: local deliveries go through lmtp). Set
# SES_CONFIGURATION_SET in mailserver.env to the worker's value (default unified-worker); unset or `none`: nothing.
# docker-mailserver already has a table there (sender_header_filter.pcre, which strips headers that reveal the
# sender's network); ours is appended to it, once, however often this script runs.
SES_SET="${SES_CONFIGURATION_SET:-}"
if [[ -n "${SES_SET}" && "${SES_SET}" != "none" ]]; then
  # SES's own rule for configuration set names; anything else would be a header SES rejects the mail for.
  if [[ ! "${SES_SET}" =~ ^[A-Za-z0-9_-]{1,64}$ ]]; then
    echo "unified-worker: SES_CONFIGURATION_SET '${SES_SET}' is not a configuration set name (letters, digits, _ and -, at most 64)" >&2
    exit 1
  fi
  config_dir="$("${postconf_cmd[@]}" -h config_directory)"
  table_file="${config_dir}/unified-worker-ses-header.regexp"
  # Every mail has one From: field; the header goes right above it.
  printf '/^From:/ PREPEND X-SES-CONFIGURATION-SET: %s\n' "${SES_SET}" > "${table_file}"
  table="regexp:${table_file}"
  current="$("${postconf_cmd[@]}" -h smtp_header_checks)"
  if [[ ",${current// /}," != *",${table},"* ]]; then
    "${postconf_cmd[@]}" -e "smtp_header_checks=${current:+${current}, }${table}"
  fi
  echo "unified-worker: Postfix names the SES configuration set ${SES_SET} on relayed mail"
fi

echo "unified-worker: Postfix internal smtpd on port ${PORT} and per-recipient LMTP delivery configured"
