/**
 * How operator commands talk: human lines on stdout by default, one JSON document on stdout with `--json`,
 * warnings and the progress line on stderr in both modes (so `--json | jq` stays parseable).
 */

/** The part of a stream the CLI writes to (process.stdout, or a buffer in tests). */
export interface OutputStream {
  write(chunk: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/** Where a confirmation is read from (process.stdin, or a stream in tests). */
export interface InputStream extends NodeJS.ReadableStream {
  readonly isTTY?: boolean;
}

export interface CliStreams {
  stdout: OutputStream;
  stderr: OutputStream;
  env: Readonly<Record<string, string | undefined>>;
  /** Absent: nothing can be asked (a command that must confirm then needs --yes). */
  stdin?: InputStream;
}

export class Output {
  constructor(
    private readonly streams: CliStreams,
    /** `--json`: human lines are suppressed, `result` prints the document. */
    readonly json: boolean,
  ) {}

  /** A line of the human report (not printed with --json). */
  line(text = ''): void {
    if (!this.json) this.streams.stdout.write(`${text}\n`);
  }

  warn(text: string): void {
    this.streams.stderr.write(`warning: ${text}\n`);
  }

  /** A plain progress line on stderr (where no progress line is redrawn: not a terminal). */
  note(text: string): void {
    this.streams.stderr.write(`${text}\n`);
  }

  /** A record of something done that cannot be undone, on stderr in both modes (`dlq purge`'s removals). */
  audit(text: string): void {
    this.streams.stderr.write(`${text}\n`);
  }

  /** The machine-readable result (printed only with --json). */
  result(value: unknown): void {
    if (this.json) this.streams.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  /** A progress line redrawn in place on a terminal; nothing at all otherwise (the caller prints plain lines). */
  progress(label: string, total: number): Progress {
    return new Progress(this.streams.stderr, label, total);
  }

  /** True when per-item lines should be printed because no progress bar is drawn. */
  get plainProgress(): boolean {
    return this.streams.stderr.isTTY !== true;
  }
}

const BAR_WIDTH = 24;

/** `label [########----------------] 12/40`, redrawn at most every 100 ms. */
export class Progress {
  private done = 0;
  private lastDraw = Number.NEGATIVE_INFINITY;
  private readonly tty: boolean;

  constructor(
    private readonly stream: OutputStream,
    private readonly label: string,
    private total: number,
  ) {
    this.tty = stream.isTTY === true;
  }

  tick(count = 1): void {
    this.update(this.done + count);
  }

  /** Sets how much is done (for progress reported by someone else, e.g. an SQS move task). */
  update(done: number, total = this.total): void {
    this.done = done;
    this.total = total;
    if (this.due(this.done >= this.total)) this.draw();
  }

  /** A free-text status line in place of the bar, for work whose total is not known yet (a bucket scan). */
  status(text: string): void {
    if (this.due(false)) this.write(`${this.label} ${text}`);
  }

  private due(force: boolean): boolean {
    const now = Date.now();
    if (!this.tty || (!force && now - this.lastDraw < 100)) return false;
    this.lastDraw = now;
    return true;
  }

  /** Clears the line so the summary starts on a clean one. */
  finish(): void {
    if (this.tty) this.stream.write('\r\x1b[2K');
  }

  private draw(): void {
    const ratio = this.total > 0 ? Math.min(1, this.done / this.total) : 1;
    const filled = Math.round(ratio * BAR_WIDTH);
    const bar = `${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}`;
    this.write(`${this.label} [${bar}] ${this.done}/${this.total}`);
  }

  private write(line: string): void {
    const width = this.stream.columns ?? 80;
    this.stream.write(`\r\x1b[2K${line.slice(0, Math.max(10, width - 1))}`);
  }
}

/** `1 mail`, `2 mails`. */
export function plural(count: number, noun: string, nouns = `${noun}s`): string {
  return `${count} ${count === 1 ? noun : nouns}`;
}
