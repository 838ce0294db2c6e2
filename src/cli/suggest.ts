/** Naming a command that does not exist: what was typed, the nearest command name, and the list. */
import type { Command } from 'commander';

/** `unknown command "doctr" (did you mean doctor?); the commands: ...`. */
export function unknownCommand(typed: string, parent: Command): string {
  const names = parent.commands.map((c) => c.name());
  const near = closest(typed, names);
  return `unknown command "${typed}"${near ? ` (did you mean ${near}?)` : ''}; the commands: ${names.join(', ')}`;
}

/** The name within two edits of `typed`, if any (a typo, not a different word). */
function closest(typed: string, names: readonly string[]): string | undefined {
  let best: { name: string; distance: number } | undefined;
  for (const name of names) {
    const distance = editDistance(typed, name);
    if (distance <= 2 && distance < name.length / 2 && (!best || distance < best.distance)) {
      best = { name, distance };
    }
  }
  return best?.name;
}

/** Levenshtein distance, one row at a time. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_v, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution);
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}
