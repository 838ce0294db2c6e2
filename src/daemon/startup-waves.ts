/**
 * Threads started together load and compile their modules together: a hundred at once took the process to several
 * times its settled memory and both cores for minutes (BENCHMARKS.md, "Many domains"). A wave of this many threads
 * starts when the previous one has loaded its code (its first requests then overlap with the next wave's loading).
 */
export const STARTUP_WAVE = 4;
/** A wave that takes longer (a slow or unreachable AWS endpoint) does not hold the next one back for longer. */
export const STARTUP_WAVE_TIMEOUT_MS = 10_000;

export interface WavesOptions<T> {
  units: readonly T[];
  start(unit: T): void;
  /** Whether a started unit is past loading (or has failed: either way it no longer loads). */
  started(unit: T): boolean;
  /** Where to register a listener called whenever `started` may have changed. */
  onChange: Set<() => void>;
  /** Stops starting further waves. */
  signal: AbortSignal;
  waveSize?: number;
  timeoutMs?: number;
}

/** Starts `units` a wave at a time; resolves when the last wave was started (or the signal aborted). */
export async function startInWaves<T>(options: WavesOptions<T>): Promise<void> {
  const size = options.waveSize ?? STARTUP_WAVE;
  for (let first = 0; first < options.units.length; first += size) {
    if (options.signal.aborted) return;
    const wave = options.units.slice(first, first + size);
    for (const unit of wave) options.start(unit);
    if (first + size < options.units.length) await waveUp(wave, options);
  }
}

function waveUp<T>(wave: readonly T[], options: WavesOptions<T>): Promise<void> {
  return new Promise((resolve) => {
    const check = () => {
      if (options.signal.aborted || wave.every((unit) => options.started(unit))) finish();
    };
    const finish = () => {
      clearTimeout(timer);
      options.onChange.delete(check);
      options.signal.removeEventListener('abort', check);
      resolve();
    };
    const timer = setTimeout(finish, options.timeoutMs ?? STARTUP_WAVE_TIMEOUT_MS);
    options.onChange.add(check);
    options.signal.addEventListener('abort', check);
    check();
  });
}
