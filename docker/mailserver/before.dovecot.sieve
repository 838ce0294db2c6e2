# unified-worker: one copy per mailbox, even when the worker hands the same mail over twice.
#
# docker-mailserver copies /tmp/docker-mailserver/before.dovecot.sieve into its global sieve_before directory and
# compiles it at every start (docker-compose.yml mounts this file there); it runs for every delivery into Dovecot,
# over LMTP (DELIVERY_PROTOCOL=lmtp) and behind Postfix (smtp) alike, before the users' own filters.
#
# Every copy the worker delivers (a mail, a forward, an auto-reply) carries X-SES-Worker-Delivery-Id as its FIRST
# header field: the same value on every retry of the same delivery, a different one for every other. A retry can
# happen after a crash between the mail server's "250 OK" and the worker's record of it; this test drops that
# second copy. Dovecot remembers the ids per user in ~/.dovecot.lda-dupes.
#
# `duplicate :header` reads the first occurrence of the field (Pigeonhole: mail_get_first_header_utf8), which is the
# worker's own: a copy of the field a sender put into the mail further down is never looked at. Mail without the
# field (anything that did not come through the worker) is never a duplicate.
#
# 14 days covers SQS's longest retention, so a message redelivered at any time is still recognised. Pigeonhole caps
# :seconds at sieve_duplicate_max_period (default 2 days), which dovecot.cf raises to 14d.
require ["duplicate"];

if duplicate :handle "unified-worker" :header "X-SES-Worker-Delivery-Id" :seconds 1209600 {
  discard;
  stop;
}
