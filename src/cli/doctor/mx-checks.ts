/**
 * Does the world send a domain's mail to SES in this region? Its MX records must name SES's inbound endpoint of
 * AWS_REGION, and nothing preferred over it. The lookup needs no AWS credentials.
 */
import { sesInboundHost } from '../../aws/resources.ts';
import { DeadlineError, withDeadline } from '../deadline.ts';
import { fail, ok, warn, type CheckResult } from './check.ts';
import type { DoctorContext } from './context.ts';
import type { MxRecord } from './mx-resolver.ts';

const SES_INBOUND = /^inbound-smtp\.([a-z0-9-]+)\.amazonaws\.com$/;

export async function mxCheck(context: DoctorContext, domain: string): Promise<CheckResult> {
  const check = `MX ${domain}`;
  const region = context.config.aws.region;
  const expected = sesInboundHost(region);
  const record = `${domain}. MX 10 ${expected}`;
  let records: MxRecord[];
  try {
    records = await withDeadline(context.timeoutMs, `the MX lookup of ${domain}`, () =>
      context.resolver.resolveMx(domain),
    );
  } catch (error) {
    return lookupFailure(context, check, domain, record, error);
  }
  const mx = records
    .map((r) => ({ host: r.exchange.toLowerCase().replace(/\.$/, ''), priority: r.priority }))
    .sort((a, b) => a.priority - b.priority);
  const ses = mx.filter((r) => r.host === expected);
  const list = mx.map((r) => `${r.host} (${r.priority})`).join(', ');
  if (ses.length === 0) {
    const elsewhere = mx.map((r) => SES_INBOUND.exec(r.host)?.[1]).find((r) => r !== undefined);
    if (elsewhere !== undefined) {
      return fail(
        check,
        `MX points at SES in ${elsewhere}, but AWS_REGION is ${region}: SES receives the mail in ${elsewhere}, where this deployment's receipt rule and queue are not`,
        `set AWS_REGION=${elsewhere} if the rule, bucket and queue are there; otherwise publish ${record} instead`,
      );
    }
    return fail(
      check,
      `MX points at ${list}, not at SES (${expected}): the mail goes there`,
      `replace the MX records by ${record}`,
    );
  }
  const best = ses[0]?.priority ?? 0;
  const others = mx.filter((r) => r.host !== expected);
  const preferred = others.filter((r) => r.priority <= best);
  if (preferred.length > 0) {
    return fail(
      check,
      `${preferred.map((r) => `${r.host} (${r.priority})`).join(', ')} is preferred over or equal to SES (${best}): senders deliver there`,
      `remove those MX records, or give SES the lowest priority number`,
    );
  }
  if (others.length > 0) {
    return warn(
      check,
      `SES (${best}), and backup MX ${others.map((r) => r.host).join(', ')}: mail a backup accepts never reaches SES`,
      'remove the backup MX records: SES queues mail itself, a backup only catches mail the worker never sees',
    );
  }
  return ok(check, `${expected} (priority ${best})`);
}

function lookupFailure(
  context: DoctorContext,
  check: string,
  domain: string,
  record: string,
  error: unknown,
): CheckResult {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENODATA') {
    return fail(check, `${domain} has no MX record: senders cannot find SES`, `publish ${record}`);
  }
  if (code === 'ENOTFOUND') {
    return fail(
      check,
      `${domain} does not exist in DNS (NXDOMAIN)`,
      `register the domain and publish ${record}`,
    );
  }
  const servers = context.config.doctorDnsServers;
  const asked =
    servers.length > 0 ? `DOCTOR_DNS_SERVERS (${servers.join(', ')})` : "the system's DNS servers";
  const detail = error instanceof DeadlineError ? error.message : `${code ?? 'error'}: ${String(error)}`;
  return warn(
    check,
    `not checked: ${detail}`,
    `check that ${asked} answer from this host, or set DOCTOR_DNS_SERVERS to one that does (e.g. 1.1.1.1)`,
  );
}
