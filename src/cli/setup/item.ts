/**
 * What setup reports per resource (one item each), what every step gets (settings, clients, the caller), and
 * how it shows progress: a redrawn line on a terminal; elsewhere a line when a wait starts and every 10 s of it.
 */
import type { AwsClients } from '../../aws/clients.ts';
import type { CallerIdentity } from '../../aws/caller-identity.ts';
import type { ControlClients } from '../../aws/control-clients.ts';
import type { Config } from '../../config/config.ts';
import type { Output, Progress } from '../output.ts';

export type SetupOutcome = 'created' | 'existed' | 'updated' | 'failed';

export type SetupKind =
  | 'table'
  | 'queue'
  | 'dead-letter queue'
  | 'bucket'
  | 'bucket policy'
  | 'topic'
  | 'subscription'
  | 'queue policy'
  | 'receipt rule set'
  | 'receipt rule'
  | 'SES identity'
  | 'configuration set'
  | 'event destination';

export interface SetupItem {
  kind: SetupKind;
  name: string;
  outcome: SetupOutcome;
  /** What was done or found, e.g. "TTL enabled on expires_at". */
  details: string[];
  /** Works, but not as intended (TTL unavailable, a differing redrive count). */
  warnings: string[];
  /** DNS records the admin must publish (setup never touches DNS). */
  records?: string[];
}

export function item(kind: SetupKind, name: string, outcome: SetupOutcome = 'existed'): SetupItem {
  return { kind, name, outcome, details: [], warnings: [] };
}

/** Marks the item failed with why; returns it. */
export function failed(result: SetupItem, why: string): SetupItem {
  result.outcome = 'failed';
  result.details.push(why);
  return result;
}

export interface SetupContext {
  config: Config;
  clients: AwsClients;
  control: ControlClients;
  out: Output;
  caller: CallerIdentity;
  progress: SetupProgress;
}

/** A non-terminal gets a line this often while a wait goes on. */
const NOTE_EVERY_MS = 10_000;

export class SetupProgress {
  private done = 0;
  private readonly line: Progress;

  constructor(
    private readonly out: Output,
    private total: number,
  ) {
    this.line = out.progress('setup', total);
  }

  /** A step begins: `setup 5/40: bucket policy example-com-emails` on a terminal. */
  step(label: string): void {
    this.done += 1;
    if (this.done > this.total) this.total = this.done;
    this.line.status(`${this.done}/${this.total}: ${label}`);
  }

  /** Starts a wait: `tick` on every poll with the seconds waited so far, `end` with what came of it. */
  waiting(what: string, maxSeconds: number): { tick(seconds: number): void; end(outcome: string): void } {
    const plain = this.out.plainProgress;
    if (plain) this.out.note(`setup: waiting for ${what} (at most ${maxSeconds} s)`);
    let lastNote = Date.now();
    return {
      tick: (seconds) => {
        this.line.status(`waiting for ${what}: ${seconds} s of at most ${maxSeconds} s`);
        if (plain && Date.now() - lastNote >= NOTE_EVERY_MS) {
          lastNote = Date.now();
          this.out.note(`setup: still waiting for ${what}: ${seconds} s of at most ${maxSeconds} s`);
        }
      },
      end: (outcome) => {
        if (plain) this.out.note(`setup: ${outcome}`);
      },
    };
  }

  finish(): void {
    this.line.finish();
  }
}
