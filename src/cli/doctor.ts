/**
 * `unified-worker doctor`: a checklist of the whole deployment, one line per check, and for every failure the
 * fix. Who the AWS calls run as comes first; then each domain's mail path (MX, receipt rule, identity, bucket,
 * queue, subscription), the tables, SES sending and its event path, and the mail server. It reads what the daemon
 * would use (same settings) and changes nothing: the mail server check stops after RCPT (RSET, QUIT), no mail is
 * sent. Every AWS, DNS and mail server call has a deadline (`--timeout`), so doctor finishes even when a peer never
 * answers. The checks live in ./doctor/, one file per group.
 */
import { Command } from 'commander';

import { createControlClients } from '../aws/control-clients.ts';
import { parseMailbox } from './addresses.ts';
import { command, type CliApp, type CommonOptions } from './command.ts';
import { EXIT_FAILED, EXIT_OK } from './exit.ts';
import { collect, listOption, parseInteger } from './options.ts';
import { mapBounded } from './doctor/bounded.ts';
import { callerCheck } from './doctor/caller-checks.ts';
import { skip, type CheckResult } from './doctor/check.ts';
import type { DoctorContext } from './doctor/context.ts';
import { domainChecks } from './doctor/domain-checks.ts';
import { mailServerChecks } from './doctor/mail-server-checks.ts';
import { createMxResolver } from './doctor/mx-resolver.ts';
import { mxCheck } from './doctor/mx-checks.ts';
import { outboundChecks } from './doctor/outbound-checks.ts';
import { printChecks } from './doctor/print.ts';
import { loadRuleSets } from './doctor/receipt-checks.ts';
import { sesAccountCheck } from './doctor/ses-checks.ts';
import { settingsChecks } from './doctor/settings-checks.ts';
import { tableChecks } from './doctor/table-checks.ts';

export type { CheckResult, CheckStatus } from './doctor/check.ts';

interface DoctorOptions extends CommonOptions {
  rcpt?: string[];
  timeout?: string;
}

/** Long enough for AWS from far away, short enough that a dead endpoint does not look like a hang. */
const DEFAULT_TIMEOUT_SECONDS = 10;
const MAX_TIMEOUT_SECONDS = 300;
/** Domains checked at once: each runs a handful of calls at a time, well inside the clients' socket pools. */
const DOMAINS_AT_ONCE = 8;

export function doctorCommand(app: CliApp): Command {
  const definition = new Command('doctor')
    .description(
      'check the deployment: AWS caller, per domain MX, receipt rule, SES identity, bucket, queue and subscription; tables, SES sending and its events, the mail server',
    )
    .option(
      '--rcpt <address>',
      'hosted address the mail server must accept in RCPT TO (repeatable; default postmaster@<each domain>)',
      collect,
    )
    .option(
      '--timeout <seconds>',
      `deadline of each AWS, DNS and mail server call (default ${DEFAULT_TIMEOUT_SECONDS})`,
    );
  return command<DoctorOptions>(app, definition, {
    domains: 'required',
    async run(context, options) {
      const recipients = listOption(options.rcpt).map((r) => parseMailbox(r, '--rcpt'));
      const timeoutMs =
        parseInteger(
          '--timeout',
          options.timeout,
          { min: 1, max: MAX_TIMEOUT_SECONDS },
          DEFAULT_TIMEOUT_SECONDS,
        ) * 1000;
      const control = createControlClients(context.config.aws);
      const resolver = createMxResolver(context.config.doctorDnsServers, timeoutMs);
      try {
        const checks = await runDoctor({ ...context, control, resolver, timeoutMs }, recipients);
        printChecks(context.out, context.config, checks);
        return checks.some((c) => c.status === 'fail') ? EXIT_FAILED : EXIT_OK;
      } finally {
        resolver.cancel();
        control.destroy();
      }
    },
  });
}

export async function runDoctor(
  context: DoctorContext,
  recipients: readonly string[] = [],
): Promise<CheckResult[]> {
  const { config } = context;
  const mailboxes = recipients.length > 0 ? recipients : config.domains.map((d) => `postmaster@${d}`);
  // The mail server needs no AWS: it is asked while the caller is.
  const server = mailServerChecks(context, mailboxes);
  const caller = await callerCheck(context);
  const checked: DoctorContext = { ...context, ...(caller.caller && { caller: caller.caller }) };
  const head = [...settingsChecks(config), caller.result];
  if (!caller.usable) {
    const mx = await mapBounded(config.domains, DOMAINS_AT_ONCE, (domain) => mxCheck(checked, domain));
    return [...head, skip('AWS checks', SKIPPED), ...mx, ...(await server)];
  }
  const rules = await loadRuleSets(checked);
  const groups = await Promise.all([
    mapBounded(config.domains, DOMAINS_AT_ONCE, (domain) => domainChecks(checked, domain, rules)).then((d) =>
      d.flat(),
    ),
    tableChecks(checked),
    sesAccountCheck(checked).then((result) => [result]),
    outboundChecks(checked),
    server,
  ]);
  return [...head, ...groups.flat()];
}

const SKIPPED =
  'skipped, they need credentials: receipt rules, SES identities and DKIM, buckets and their policies, queues, ' +
  'subscriptions, tables, SES sending, the configuration set';
