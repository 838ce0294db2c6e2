/**
 * `unified-worker blocklist list|add|remove|test`: the sender patterns the daemon reads from BLOCKLIST_TABLE
 * (`blocked_patterns`, a list of S per recipient). `test` asks the daemon's own matcher.
 */
import { Command } from 'commander';

import { MAIL_LIMITS } from '../mail/mail-limits.ts';

import { checkBlocked } from '../mail/blocklist.ts';
import { domainPart, matchesEverything, parseMailbox, parsePattern } from './addresses.ts';
import { editAddressList, getAddressItem, listAddressItems, stringList } from './address-items.ts';
import { cacheNote, command, type CliApp, type CommandContext, type CommonOptions } from './command.ts';
import { EXIT_FAILED, EXIT_OK } from './exit.ts';
import { plural } from './output.ts';

/** The daemon's bound: patterns beyond it are not used. */
const MAX_PATTERNS = MAIL_LIMITS.blockedPatterns;

export function blocklistCommand(app: CliApp): Command {
  const blocklist = new Command('blocklist').description(
    "show and change a recipient's blocked sender patterns",
  );
  blocklist.addCommand(
    command(
      app,
      new Command('list')
        .description("an address's patterns, or every address with patterns in the domains")
        .argument('[address]'),
      {
        domains: (_options: CommonOptions, address: string | undefined) =>
          address === undefined ? 'required' : 'optional',
        run: (context, _options, address) =>
          address === undefined ? listAll(context) : listOne(context, address),
      },
    ),
  );
  for (const [name, description] of [
    ['add', 'block senders matching the patterns (fnmatch: *, ?, [a-z]; case-insensitive)'],
    ['remove', 'unblock the patterns'],
  ] as const) {
    blocklist.addCommand(
      command(
        app,
        new Command(name).description(description).argument('<address>').argument('<pattern...>'),
        {
          domains: 'optional',
          run: (context, _options: CommonOptions, address: string, patterns: string[]) =>
            changePatterns(context, name, address, patterns),
        },
      ),
    );
  }
  blocklist.addCommand(
    command(
      app,
      new Command('test')
        .description('does the address block this sender? exit 0 when blocked, 1 when not')
        .argument('<address>')
        .argument('<sender>'),
      {
        domains: 'optional',
        run: (context, _options: CommonOptions, address: string, sender: string) =>
          testSender(context, address, sender),
      },
    ),
  );
  return blocklist;
}

async function patternsOf(context: CommandContext, address: string): Promise<string[]> {
  const item = await getAddressItem(context.clients.ddb, context.config.tables.blocklist, address);
  return stringList(item?.blocked_patterns);
}

async function listOne(context: CommandContext, input: string): Promise<number> {
  const address = parseMailbox(input);
  const patterns = await patternsOf(context, address);
  context.out.result({ email_address: address, blocked_patterns: patterns });
  context.out.line(
    patterns.length === 0
      ? `${address} blocks no sender`
      : `${address} blocks ${plural(patterns.length, 'pattern')}:`,
  );
  for (const pattern of patterns) context.out.line(`  ${pattern}`);
  return EXIT_OK;
}

async function listAll(context: CommandContext): Promise<number> {
  const { items, truncated } = await listAddressItems(
    context.clients.ddb,
    context.config.tables.blocklist,
    context.config.domains,
  );
  const entries = items
    .map((item) => ({
      email_address: item.email_address,
      blocked_patterns: stringList(item.blocked_patterns),
    }))
    .filter((entry) => entry.blocked_patterns.length > 0);
  context.out.result({ blocklists: entries, truncated });
  context.out.line(
    `${plural(entries.length, 'address', 'addresses')} with blocked senders in ${context.config.domains.join(', ')}`,
  );
  for (const entry of entries)
    context.out.line(`  ${entry.email_address}: ${entry.blocked_patterns.join(' ')}`);
  if (truncated) context.out.warn('the list is cut: more addresses than can be listed at once');
  return EXIT_OK;
}

async function changePatterns(
  context: CommandContext,
  action: 'add' | 'remove',
  input: string,
  rawPatterns: readonly string[],
): Promise<number> {
  const address = parseMailbox(input);
  const patterns = [...new Set(rawPatterns.map(parsePattern))];
  if (action === 'add') {
    for (const pattern of patterns.filter(matchesEverything)) {
      context.out.warn(`"${pattern}" matches every sender: ${address} will receive no mail at all`);
    }
  }
  const domains = context.config.domains;
  if (domains.length > 0 && !domains.includes(domainPart(address))) {
    context.out.warn(
      `${domainPart(address)} is not in DOMAINS (${domains.join(', ')}): the daemon never reads this list`,
    );
  }
  const written = await editAddressList(context.clients.ddb, context.config.tables.blocklist, address, {
    attribute: 'blocked_patterns',
    add: action === 'add' ? patterns : [],
    remove: action === 'remove' ? patterns : [],
    maxLength: MAX_PATTERNS,
  });
  for (const p of written.alreadyThere) context.out.warn(`${p} was already blocked`);
  for (const p of written.notThere) context.out.warn(`${p} was not blocked`);
  const now = stringList(written.after.blocked_patterns);
  context.out.result({ email_address: address, blocked_patterns: now });
  context.out.line(
    `${address} blocks ${plural(now.length, 'pattern')}${now.length > 0 ? `: ${now.join(' ')}` : ''}`,
  );
  context.out.line(cacheNote(context, 'this'));
  return EXIT_OK;
}

async function testSender(context: CommandContext, input: string, senderInput: string): Promise<number> {
  const address = parseMailbox(input);
  const sender = parseMailbox(senderInput, 'sender');
  const patterns = await patternsOf(context, address);
  const [decision] = checkBlocked(sender, [address], new Map([[address, patterns]]));
  const blocked = decision?.blocked === true;
  context.out.result({
    email_address: address,
    sender,
    blocked,
    ...(decision?.pattern && { pattern: decision.pattern }),
  });
  context.out.line(
    blocked
      ? `blocked: ${sender} matches ${address}'s pattern ${decision?.pattern ?? ''}`
      : `not blocked: none of ${address}'s ${plural(patterns.length, 'pattern')} matches ${sender}`,
  );
  return blocked ? EXIT_OK : EXIT_FAILED;
}
