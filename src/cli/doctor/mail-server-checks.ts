/**
 * The mail server the worker delivers to: the delivery port (SMTP or LMTP) and the internal port answer and accept
 * RCPT TO a hosted address; then RSET and QUIT, nothing is sent.
 */
import { hostname } from 'node:os';

import { probeMailServer } from '../smtp-probe.ts';
import { fail, ok, type CheckResult } from './check.ts';
import type { DoctorContext } from './context.ts';

interface ProbeTarget {
  name: string;
  port: number;
  lmtp: boolean;
  setting: 'LMTP_PORT' | 'SMTP_PORT' | 'INTERNAL_SMTP_PORT';
}

export function mailServerChecks(
  context: DoctorContext,
  recipients: readonly string[],
): Promise<CheckResult[]> {
  const { smtp } = context.config;
  const lmtp = smtp.protocol === 'lmtp';
  const targets: ProbeTarget[] = [
    {
      name: lmtp ? `LMTP ${smtp.host}:${smtp.lmtpPort}` : `SMTP ${smtp.host}:${smtp.port}`,
      port: lmtp ? smtp.lmtpPort : smtp.port,
      lmtp,
      setting: lmtp ? 'LMTP_PORT' : 'SMTP_PORT',
    },
    {
      name: `internal SMTP ${smtp.host}:${smtp.internalPort}`,
      port: smtp.internalPort,
      lmtp: false,
      setting: 'INTERNAL_SMTP_PORT',
    },
  ];
  return Promise.all(targets.map((target) => probe(context, target, recipients)));
}

async function probe(
  context: DoctorContext,
  target: ProbeTarget,
  recipients: readonly string[],
): Promise<CheckResult> {
  const { smtp } = context.config;
  const result = await probeMailServer({
    host: smtp.host,
    port: target.port,
    lmtp: target.lmtp,
    recipients,
    timeoutMs: Math.min(smtp.timeoutMs, context.timeoutMs),
    clientName: hostname() || 'unified-worker-doctor',
  });
  const check = `mail server ${target.name}`;
  if (result.error !== undefined) {
    return fail(
      check,
      result.error,
      target.setting === 'INTERNAL_SMTP_PORT'
        ? 'the internal port comes from docker/mailserver/user-patches.sh (postconf -M 2525/inet must show it); check SMTP_HOST and INTERNAL_SMTP_PORT'
        : `is the mail server running and reachable from here? check SMTP_HOST and ${target.setting}${target.lmtp ? ' (Dovecot LMTP listener: docker/mailserver/dovecot.cf)' : ''}`,
    );
  }
  if (result.refused.length > 0) {
    return fail(
      check,
      `refused ${result.refused.map((r) => `${r.recipient} (${r.reply})`).join(', ')}`,
      'the domain must be hosted by the mail server and the address exist; name a real mailbox with --rcpt',
    );
  }
  return ok(check, `accepts RCPT TO ${recipients.join(', ')} (then RSET, nothing sent)`);
}
