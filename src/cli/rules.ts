/**
 * `unified-worker rules show|set|delete|list`: the per-address rules the daemon reads from RULES_TABLE —
 * `ooo_active` (BOOL), `ooo_message` (S), `ooo_content_type` (`text` | `html`), `forwards` (list of S) — written in
 * exactly that shape, addresses validated and lower-cased.
 */
import { Command, Option } from 'commander';

import { MAIL_LIMITS } from '../mail/mail-limits.ts';

import { domainPart, parseMailbox } from './addresses.ts';
import {
  deleteAddressItem,
  getAddressItem,
  listAddressItems,
  editAddressList,
  stringList,
  type AddressItem,
  type ItemChange,
} from './address-items.ts';
import { cacheNote, command, type CliApp, type CommandContext, type CommonOptions } from './command.ts';
import { EXIT_OK, UsageError } from './exit.ts';
import { readInputFile } from './input-file.ts';
import { collect, listOption } from './options.ts';
import { plural } from './output.ts';

/** The attributes of a rule item the daemon reads (README, "DynamoDB tables"). */
export interface RuleFields {
  email_address: string;
  ooo_active?: boolean;
  ooo_message?: string;
  ooo_content_type?: 'text' | 'html';
  forwards?: string[];
}

/** The daemon's bounds on what a rule holds (the same table: beyond them it would skip or cut). */
const { forwards: MAX_FORWARDS, oooMessageChars: MAX_OOO_MESSAGE_CHARS } = MAIL_LIMITS;
/** Rules looked up while following a forward chain for loops. */
const MAX_CHAIN_LOOKUPS = 100;

interface SetOptions extends CommonOptions {
  ooo?: 'on' | 'off';
  oooMessage?: string;
  oooFile?: string;
  html?: boolean;
  forwardAdd?: string[];
  forwardRemove?: string[];
}

export function rulesCommand(app: CliApp): Command {
  const rules = new Command('rules').description(
    'show and change per-address rules: out-of-office and forwards',
  );
  rules.addCommand(
    command(app, new Command('show').description("an address's rules").argument('<address>'), {
      domains: 'optional',
      run: (context, _options: CommonOptions, address: string) => showRule(context, address),
    }),
  );
  rules.addCommand(
    command(
      app,
      new Command('set')
        .description("change an address's rules (a message turns the out-of-office on unless --ooo off)")
        .argument('<address>')
        .addOption(new Option('--ooo <state>', 'out-of-office on or off').choices(['on', 'off']))
        .option('--ooo-message <text>', 'the out-of-office text (multi-line is fine)')
        .option('--ooo-file <file>', 'read the out-of-office text from a UTF-8 file')
        .option('--html', 'the out-of-office text is HTML')
        .option('--forward-add <address>', 'forward every mail to this address too (repeatable)', collect)
        .option('--forward-remove <address>', 'stop forwarding to this address (repeatable)', collect),
      {
        domains: 'optional',
        run: (context, options: SetOptions, address: string) => setRule(context, address, options),
      },
    ),
  );
  rules.addCommand(
    command(app, new Command('delete').description("remove an address's rules").argument('<address>'), {
      domains: 'optional',
      run: (context, _options: CommonOptions, address: string) => deleteRule(context, address),
    }),
  );
  rules.addCommand(
    command(app, new Command('list').description('every address with rules in the domains'), {
      domains: 'required',
      run: (context) => listRules(context),
    }),
  );
  return rules;
}

/** The stored fields under their table names, the shape `--json` prints. */
export function ruleFields(item: AddressItem): RuleFields {
  return {
    email_address: item.email_address,
    ...(typeof item.ooo_active === 'boolean' && { ooo_active: item.ooo_active }),
    ...(typeof item.ooo_message === 'string' && { ooo_message: item.ooo_message }),
    ...((item.ooo_content_type === 'text' || item.ooo_content_type === 'html') && {
      ooo_content_type: item.ooo_content_type,
    }),
    ...(item.forwards !== undefined && { forwards: stringList(item.forwards) }),
  };
}

async function showRule(context: CommandContext, input: string): Promise<number> {
  const address = parseMailbox(input);
  warnIfNotServed(context, address);
  const item = await getAddressItem(context.clients.ddb, context.config.tables.rules, address);
  context.out.result(item ? ruleFields(item) : null);
  if (!item) context.out.line(`no rules for ${address}`);
  else printRule(context, ruleFields(item));
  return EXIT_OK;
}

async function setRule(context: CommandContext, input: string, options: SetOptions): Promise<number> {
  const address = parseMailbox(input);
  const adds = listOption(options.forwardAdd).map((a) => parseMailbox(a, '--forward-add'));
  const removes = listOption(options.forwardRemove).map((a) => parseMailbox(a, '--forward-remove'));
  if (adds.includes(address)) throw new UsageError(`${address} cannot forward to itself`);
  if (options.oooMessage !== undefined && options.oooFile !== undefined) {
    throw new UsageError('give the out-of-office text with --ooo-message or --ooo-file, not both');
  }
  const message =
    options.oooFile !== undefined ? await readMessageFile(options.oooFile) : checkMessage(options.oooMessage);
  if (
    options.ooo === undefined &&
    message === undefined &&
    !options.html &&
    adds.length + removes.length === 0
  ) {
    throw new UsageError(
      'nothing to change: give --ooo, --ooo-message, --ooo-file, --html, --forward-add or --forward-remove',
    );
  }
  warnIfNotServed(context, address);

  const written = await editAddressList(context.clients.ddb, context.config.tables.rules, address, {
    attribute: 'forwards',
    add: adds,
    remove: removes,
    maxLength: MAX_FORWARDS,
    set: (current) => oooChange(current, options, message, address),
  });
  const after = ruleFields(written.after);
  for (const target of written.notThere) context.out.warn(`${target} was not a forward target`);
  for (const chain of await forwardLoops(context, address, after.forwards ?? [])) {
    context.out.warn(
      `forward loop: ${chain.join(' -> ')}. The loop marker keeps forwarded mail from being forwarded again, so ` +
        `nothing circulates, but mail that reached ${chain[1]} through ${address} is not forwarded back.`,
    );
  }
  context.out.result(after);
  context.out.line(`rules of ${address} saved`);
  printRule(context, after);
  context.out.line(cacheNote(context, 'them'));
  return EXIT_OK;
}

/** The out-of-office attributes to write, from the options and what is stored. */
function oooChange(
  current: AddressItem | undefined,
  options: SetOptions,
  message: string | undefined,
  address: string,
): ItemChange {
  const change: ItemChange = {};
  const stored = typeof current?.ooo_message === 'string' ? current.ooo_message : '';
  const explicit = options.ooo === undefined ? undefined : options.ooo === 'on';
  const active = explicit ?? (message !== undefined ? true : current?.ooo_active === true);
  if (active && (message ?? stored).trim() === '') {
    throw new UsageError(
      `--ooo on needs a text: none is stored for ${address} (--ooo-message or --ooo-file)`,
    );
  }
  // The daemon reads ooo_active as a BOOL: a new item gets it explicitly.
  if (explicit !== undefined || message !== undefined || current?.ooo_active === undefined)
    change.ooo_active = active;
  if (message !== undefined) change.ooo_message = message;
  if (message !== undefined || options.html) change.ooo_content_type = options.html ? 'html' : 'text';
  return change;
}

async function deleteRule(context: CommandContext, input: string): Promise<number> {
  const address = parseMailbox(input);
  const removed = await deleteAddressItem(context.clients.ddb, context.config.tables.rules, address);
  context.out.result({ email_address: address, deleted: removed !== undefined });
  context.out.line(removed ? `rules of ${address} deleted` : `no rules for ${address}: nothing deleted`);
  return EXIT_OK;
}

async function listRules(context: CommandContext): Promise<number> {
  const { items, truncated } = await listAddressItems(
    context.clients.ddb,
    context.config.tables.rules,
    context.config.domains,
  );
  const rules = items.map(ruleFields);
  context.out.result({ rules, truncated });
  context.out.line(
    `${plural(rules.length, 'address', 'addresses')} with rules in ${context.config.domains.join(', ')}`,
  );
  for (const rule of rules) {
    const ooo = rule.ooo_active
      ? `out-of-office on (${rule.ooo_content_type ?? 'text'})`
      : 'out-of-office off';
    const forwards = rule.forwards?.length ? `, forwards to ${rule.forwards.join(', ')}` : '';
    context.out.line(`  ${rule.email_address}: ${ooo}${forwards}`);
  }
  if (truncated) context.out.warn('the list is cut: more addresses than can be listed at once');
  return EXIT_OK;
}

function printRule(context: CommandContext, rule: RuleFields): void {
  const { out, config } = context;
  out.line(
    `  out-of-office: ${rule.ooo_active ? 'on' : 'off'}${rule.ooo_message !== undefined ? ` (${rule.ooo_content_type ?? 'text'})` : ''}`,
  );
  for (const line of (rule.ooo_message ?? '')
    .split(/\r?\n/)
    .filter((_l, i, all) => all.length > 1 || all[0] !== '')) {
    out.line(`    | ${line}`);
  }
  const forwards = rule.forwards ?? [];
  out.line(`  forwards:${forwards.length === 0 ? ' none' : ''}`);
  for (const target of forwards) {
    const route = config.domains.includes(domainPart(target)) ? 'internal port' : 'SES';
    out.line(`    ${target} (${route})`);
  }
}

function checkMessage(message: string | undefined): string | undefined {
  if (message === undefined) return undefined;
  if (message.includes('\0')) throw new UsageError('the out-of-office text contains a NUL character');
  if (message.length > MAX_OOO_MESSAGE_CHARS) {
    throw new UsageError(
      `the out-of-office text is ${message.length} characters: at most ${MAX_OOO_MESSAGE_CHARS} are used`,
    );
  }
  return message;
}

async function readMessageFile(file: string): Promise<string> {
  const bytes = await readInputFile(file, {
    option: '--ooo-file',
    // UTF-8 takes up to 3 bytes for a character the daemon counts as one; the text is checked in characters after.
    maxBytes: 3 * MAX_OOO_MESSAGE_CHARS,
    what: 'text',
    allowEmpty: true,
  });
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new UsageError(`--ooo-file ${file} is not UTF-8 text`);
  }
  return checkMessage(text.replace(/^\uFEFF/, '')) ?? '';
}

function warnIfNotServed(context: CommandContext, address: string): void {
  const domains = context.config.domains;
  if (domains.length > 0 && !domains.includes(domainPart(address))) {
    context.out.warn(
      `${domainPart(address)} is not in DOMAINS (${domains.join(', ')}): the daemon never applies these rules`,
    );
  }
}

/**
 * Forward chains, as far as this table tells, that lead back to `address`: `a -> b -> a`. Breadth-first over the
 * stored forwards of each target, with a bounded number of lookups.
 */
async function forwardLoops(
  context: CommandContext,
  address: string,
  forwards: readonly string[],
): Promise<string[][]> {
  const loops: string[][] = [];
  const seen = new Set<string>([address]);
  let frontier: string[][] = forwards.map((f) => [address, f]);
  let lookups = 0;
  while (frontier.length > 0 && lookups < MAX_CHAIN_LOOKUPS) {
    const next: string[][] = [];
    for (const chain of frontier) {
      const last = chain[chain.length - 1] ?? '';
      if (seen.has(last) || lookups >= MAX_CHAIN_LOOKUPS) continue;
      seen.add(last);
      lookups += 1;
      const item = await getAddressItem(context.clients.ddb, context.config.tables.rules, last);
      for (const target of stringList(item?.forwards).map((t) => t.toLowerCase())) {
        if (target === address) loops.push([...chain, target]);
        else next.push([...chain, target]);
      }
    }
    frontier = next;
  }
  return loops;
}
