#!/bin/bash
# unified-worker: the worker's two Postfix ports (2525 and 2526) of docker-mailserver, the delivery id kept on them and
# stripped on every other way in, one LMTP delivery per recipient at a time, and (with SES_CONFIGURATION_SET in the
# mail server's environment) the SES configuration set on mail relayed to SES.
#
# docker-mailserver runs /tmp/docker-mailserver/user-patches.sh at every container start, right before it starts
# its daemons (docker-compose.yml mounts this file there). Every step below is idempotent.
#
# Why not docker-mailserver's `postfix-master.cf` override file: it is applied with `postconf -P`, which only
# changes parameters of services that already exist in master.cf; for a new one Postfix just warns
# `unmatched service_name/type` and changes nothing. A new service needs `postconf -M`, hence this script.
#
# The worker's ports (SMTP_PORT and INTERNAL_SMTP_PORT of the worker), reachable from trusted networks only
# (permit_mynetworks: docker-compose.yml sets PERMIT_DOCKER=connected-networks):
#   - 2526, mailbox deliveries: routed like mail on port 25 (aliases, transport_maps, content filter, milters), but
#     without postscreen;
#   - 2525, forwards and auto-replies to addresses of the hosted domains: content_filter=$virtual_transport, so
#     every accepted mail goes straight to the mailbox transport (Dovecot LMTP), whatever transport_maps, relayhost
#     (e.g. RELAY_HOST=SES) or the global content filter (Amavis) would do with it: a forward to a local mailbox can
#     never be relayed out through SES and come back as a loop; only hosted domains are accepted
#     (reject_unauth_destination), unknown mailboxes get 550 at RCPT; no milters (Rspamd/OpenDKIM/OpenDMARC), no SPF
#     policy, postgrey or DNSBL checks: the mail was already checked by SES and is generated or forwarded by the
#     worker itself. Virtual aliases (postfix-virtual.cf) still apply, but must point to local mailboxes there: an
#     alias to an outside address cannot be delivered through the LMTP content filter and bounces.
# Never publish ports 2525 and 2526 outside the container network.
#
# The delivery id: every copy the worker hands over starts with X-SES-Worker-Delivery-Id, and before.dovecot.sieve
# discards a second copy with the same id. Only the worker's copies may carry one: mail that arrives any other way
# (port 25, submission, sendmail/pickup, a Sieve redirect) with a copied id would otherwise make Dovecot discard the
# worker's real copy. So Postfix removes the field (header_checks IGNORE) in every cleanup service but the worker's
# own (unified-worker-cleanup, used by 2525 and 2526 only):
#   - main.cf header_checks (the default cleanup: port 25, bounces) gets our table first;
#   - every other cleanup service with header_checks of its own (docker-mailserver's sender-cleanup for submission)
#     gets it too;
#   - pickup (sendmail, Dovecot's redirects and vacation) runs with receive_override_options=no_header_body_checks in
#     docker-mailserver, which skips header_checks: it gets a cleanup service of its own that checks nothing but our
#     field, so it loses no other check it did not already skip.
# Amavis' reinjection port (10025) skips header checks on purpose: what it gets already passed a cleanup service.
# Dovecot's own LMTP port 24 (DELIVERY_PROTOCOL=lmtp) and LDA (getmail) do not pass Postfix at all: port 24 must be
# reachable by the worker only, and mail fetched by getmail can carry a copied id (docs/exactly-once.md).
set -euo pipefail

INTERNAL_PORT="${WORKER_INTERNAL_SMTP_PORT:-2525}"
DELIVERY_PORT="${WORKER_SMTP_PORT:-2526}"
WORKER_CLEANUP=unified-worker-cleanup
PICKUP_CLEANUP=unified-worker-pickup-cleanup

# POSTFIX_CONFIG_DIR lets the same script be tried against a scratch Postfix configuration.
postconf_cmd=(postconf)
if [[ -n "${POSTFIX_CONFIG_DIR:-}" ]]; then postconf_cmd+=(-c "${POSTFIX_CONFIG_DIR}"); fi
config_dir="$("${postconf_cmd[@]}" -h config_directory)"

# --- the delivery id: removed everywhere but on the worker's ports --------------------------------------------------
strip_file="${config_dir}/unified-worker-delivery-id.regexp"
strip_table="regexp:${strip_file}"
printf '/^X-SES-Worker-Delivery-Id:/ IGNORE\n' >"${strip_file}"

# A table list without ours, comma-separated without spaces (a master.cf -o value cannot hold a space).
without_ours() {
  local item out=""
  for item in ${1//,/ }; do
    [[ "${item}" == "${strip_table}" ]] || out="${out:+${out},}${item}"
  done
  printf '%s' "${out}"
}
# A service parameter as master.cf sets it ('' when it does not).
service_param() { "${postconf_cmd[@]}" -Ph "$1/$2" 2>/dev/null || true; }

others="$(without_ours "$("${postconf_cmd[@]}" -h header_checks)")"
"${postconf_cmd[@]}" -e "header_checks=${strip_table}${others:+, ${others}}"

# The worker's cleanup: main.cf's other header checks as before, ours not.
"${postconf_cmd[@]}" -Me "${WORKER_CLEANUP}/unix=${WORKER_CLEANUP} unix n - n - 0 cleanup"
"${postconf_cmd[@]}" -Pe \
  "${WORKER_CLEANUP}/unix/syslog_name=postfix/worker-cleanup" \
  "${WORKER_CLEANUP}/unix/header_checks=${others}"

# pickup's cleanup: our table only, as docker-mailserver's pickup checks no header or body.
"${postconf_cmd[@]}" -Me "${PICKUP_CLEANUP}/unix=${PICKUP_CLEANUP} unix n - n - 0 cleanup"
"${postconf_cmd[@]}" -Pe \
  "${PICKUP_CLEANUP}/unix/syslog_name=postfix/pickup-cleanup" \
  "${PICKUP_CLEANUP}/unix/header_checks=${strip_table}" \
  "${PICKUP_CLEANUP}/unix/mime_header_checks=" \
  "${PICKUP_CLEANUP}/unix/nested_header_checks=" \
  "${PICKUP_CLEANUP}/unix/body_checks="

while read -r service command; do
  case "${command}" in
    cleanup)
      [[ "${service}" == "${WORKER_CLEANUP}/unix" || "${service}" == "${PICKUP_CLEANUP}/unix" ]] && continue
      own="$(service_param "${service}" header_checks)"
      if [[ -n "${own}" ]]; then
        rest="$(without_ours "${own}")"
        "${postconf_cmd[@]}" -Pe "${service}/header_checks=${strip_table}${rest:+,${rest}}"
      fi
      ;;
    pickup)
      options="$(service_param "${service}" receive_override_options)"
      if [[ ",${options// /}," == *",no_header_body_checks,"* ]]; then
        kept=""
        for option in ${options//,/ }; do
          [[ "${option}" == no_header_body_checks ]] || kept="${kept:+${kept},}${option}"
        done
        "${postconf_cmd[@]}" -Pe \
          "${service}/receive_override_options=${kept}" \
          "${service}/cleanup_service_name=${PICKUP_CLEANUP}"
      fi
      ;;
  esac
done < <("${postconf_cmd[@]}" -M 2>/dev/null | awk '$8 == "cleanup" || $8 == "pickup" { print $1 "/" $2, $8 }')

# --- the worker's ports ----------------------------------------------------------------------------------------------
# -M replaces an entry of the same name/type, so running this at every start is idempotent.
"${postconf_cmd[@]}" -Me "${DELIVERY_PORT}/inet=${DELIVERY_PORT} inet n - n - - smtpd"
"${postconf_cmd[@]}" -Pe \
  "${DELIVERY_PORT}/inet/syslog_name=postfix/worker" \
  "${DELIVERY_PORT}/inet/smtpd_client_restrictions=permit_mynetworks,reject" \
  "${DELIVERY_PORT}/inet/cleanup_service_name=${WORKER_CLEANUP}"

"${postconf_cmd[@]}" -Me "${INTERNAL_PORT}/inet=${INTERNAL_PORT} inet n - n - - smtpd"

# Single quotes: $virtual_transport is expanded by Postfix at run time, not by this shell.
"${postconf_cmd[@]}" -Pe \
  "${INTERNAL_PORT}/inet/syslog_name=postfix/internal" \
  "${INTERNAL_PORT}/inet/content_filter="'$virtual_transport' \
  "${INTERNAL_PORT}/inet/smtpd_client_restrictions=permit_mynetworks,reject" \
  "${INTERNAL_PORT}/inet/smtpd_helo_restrictions=" \
  "${INTERNAL_PORT}/inet/smtpd_sender_restrictions=" \
  "${INTERNAL_PORT}/inet/smtpd_relay_restrictions=reject_unauth_destination" \
  "${INTERNAL_PORT}/inet/smtpd_recipient_restrictions=" \
  "${INTERNAL_PORT}/inet/smtpd_milters=" \
  "${INTERNAL_PORT}/inet/smtpd_sasl_auth_enable=no" \
  "${INTERNAL_PORT}/inet/smtpd_tls_security_level=none" \
  "${INTERNAL_PORT}/inet/cleanup_service_name=${WORKER_CLEANUP}"

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

echo "unified-worker: Postfix smtpd for the worker on ports ${DELIVERY_PORT} and ${INTERNAL_PORT}, the delivery id kept there only, per-recipient LMTP delivery configured"
