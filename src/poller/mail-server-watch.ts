/**
 * Whether the mail server answers, as the coordinator's monitor sees it (it checks both ports, more often while the
 * server is down). A domain poller receives no mail while it is down and takes its waiting mail up when it is back.
 */
export interface MailServerWatch {
  readonly up: boolean;
  /** `listener` is told every change; the returned function stops that. */
  onChange(listener: (up: boolean) => void): () => void;
}

/** A watch fed by someone else's observations: the coordinator's messages in a poller thread, a monitor in tests. */
export class MailServerState implements MailServerWatch {
  private current: boolean;
  private readonly listeners = new Set<(up: boolean) => void>();

  constructor(initial: boolean) {
    this.current = initial;
  }

  get up(): boolean {
    return this.current;
  }

  set(up: boolean): void {
    if (up === this.current) return;
    this.current = up;
    for (const listener of [...this.listeners]) listener(up);
  }

  onChange(listener: (up: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/** For a poller nobody tells about the mail server: always up (outages are then found from deliveries alone). */
export const assumedUp: MailServerWatch = { up: true, onChange: () => () => undefined };
