/**
 * Python-`fnmatch` compatible, case-insensitive sender pattern matching for the blocklist.
 *
 * Why not micromatch or a RegExp: blocklist patterns are written by admins and a self-service UI, so they
 * are hostile input. Backtracking engines blow up on patterns like `*a*a*a*…b` (seconds per match), and
 * micromatch has glob semantics the original Python daemon never had (`*` stops at `/`, leading `!`
 * negates, `{a,b}` braces, extglobs, `\` escapes, dot-files). This matcher keeps `fnmatch.fnmatchcase`
 * semantics on lower-cased inputs and runs the classic two-pointer wildcard algorithm: every non-star
 * token consumes exactly one character, so only the most recent `*` ever needs to be retried, which
 * bounds the work at O(len(pattern) · len(subject)) with no regex and no recursion.
 *
 * Character classes reproduce CPython's `fnmatch.translate` exactly (3.11), including its quirks:
 * `[!…]` negates, `^` is literal, a `]` right after `[` or `[!` is literal, an unclosed `[` is a literal
 * `[`, reversed ranges such as `[z-a]` are dropped, and a `-` right after a range is literal.
 * Text is compared per Unicode code point, as Python does.
 */

/**
 * RFC 5321 caps a forward path at 256 octets (254 for the address itself); anything over 1024 is not an
 * address we could be asked about legitimately, and refusing it also caps the O(n·m) work per match.
 */
export const FNMATCH_MAX_LENGTH = 1024;

export interface MatchStats {
  readonly matched: boolean;
  /** Loop iterations of the matcher; deterministic, so tests can bound the work without timing. */
  readonly steps: number;
}

export interface CompiledPattern {
  readonly source: string;
  matches(subject: string): boolean;
  matchWithStats(subject: string): MatchStats;
}

interface ClassRange {
  readonly lo: number;
  readonly hi: number;
}

type Token =
  | { readonly kind: 'star' }
  | { readonly kind: 'any' }
  | { readonly kind: 'literal'; readonly cp: number }
  | { readonly kind: 'class'; readonly negated: boolean; readonly ranges: readonly ClassRange[] };

const STAR: Token = { kind: 'star' };
const ANY: Token = { kind: 'any' };
/** CPython turns `[z-a]`-style classes into `(?!)`; an empty positive class matches nothing either. */
const NOTHING: Token = { kind: 'class', negated: false, ranges: [] };

function toCodePoints(text: string): number[] {
  const out: number[] = [];
  for (const ch of text) out.push(ch.codePointAt(0) ?? 0);
  return out;
}

function literalRanges(chars: readonly number[], into: ClassRange[]): void {
  for (const cp of chars) into.push({ lo: cp, hi: cp });
}

/**
 * Mirrors the range-splitting branch of CPython's `fnmatch.translate` on `pat[start:end]` (the class body
 * without brackets), so that odd classes like `[a-b-c]` or `[z-a]` mean the same thing here as there.
 */
function compileClass(pat: readonly number[], start: number, end: number): Token {
  const HYPHEN = 0x2d;
  const BANG = 0x21;
  const body = pat.slice(start, end);
  let chunks: number[][];
  if (!body.includes(HYPHEN)) {
    chunks = [body];
  } else {
    chunks = [];
    let i = start;
    let k = pat[start] === BANG ? start + 2 : start + 1;
    for (;;) {
      let found = -1;
      for (let x = k; x < end; x++) {
        if (pat[x] === HYPHEN) {
          found = x;
          break;
        }
      }
      if (found < 0) break;
      chunks.push(pat.slice(i, found));
      i = found + 1;
      k = found + 3;
    }
    const last = pat.slice(i, end);
    if (last.length > 0) chunks.push(last);
    else chunks[chunks.length - 1]?.push(HYPHEN);
    for (let c = chunks.length - 1; c > 0; c--) {
      const prev = chunks[c - 1] ?? [];
      const cur = chunks[c] ?? [];
      const prevLast = prev[prev.length - 1];
      const curFirst = cur[0];
      if (prevLast !== undefined && curFirst !== undefined && prevLast > curFirst) {
        chunks[c - 1] = [...prev.slice(0, -1), ...cur.slice(1)];
        chunks.splice(c, 1);
      }
    }
  }

  const total = chunks.reduce((n, c) => n + c.length, 0);
  if (total === 0) return NOTHING;
  const first = chunks[0] ?? [];
  if (total === 1 && first[0] === BANG) return ANY;

  const negated = first[0] === BANG;
  if (negated) chunks[0] = first.slice(1);

  // Between consecutive chunks sits a range operator joining the last char of one with the first of the next.
  const ranges: ClassRange[] = [];
  for (let c = 0; c < chunks.length; c++) {
    const chunk = chunks[c] ?? [];
    const from = c > 0 ? 1 : 0;
    const to = c < chunks.length - 1 ? chunk.length - 1 : chunk.length;
    literalRanges(chunk.slice(from, Math.max(from, to)), ranges);
    const next = chunks[c + 1];
    const lo = chunk[chunk.length - 1];
    const hi = next?.[0];
    if (lo !== undefined && hi !== undefined && lo <= hi) ranges.push({ lo, hi });
  }
  return { kind: 'class', negated, ranges };
}

function tokenize(lowered: string): Token[] {
  const OPEN = 0x5b;
  const CLOSE = 0x5d;
  const BANG = 0x21;
  const pat = toCodePoints(lowered);
  const tokens: Token[] = [];
  let i = 0;
  while (i < pat.length) {
    const c = pat[i] ?? 0;
    i++;
    if (c === 0x2a) {
      if (tokens[tokens.length - 1] !== STAR) tokens.push(STAR);
    } else if (c === 0x3f) {
      tokens.push(ANY);
    } else if (c === OPEN) {
      let j = i;
      if (j < pat.length && pat[j] === BANG) j++;
      if (j < pat.length && pat[j] === CLOSE) j++;
      while (j < pat.length && pat[j] !== CLOSE) j++;
      if (j >= pat.length) {
        tokens.push({ kind: 'literal', cp: OPEN });
      } else {
        tokens.push(compileClass(pat, i, j));
        i = j + 1;
      }
    } else {
      tokens.push({ kind: 'literal', cp: c });
    }
  }
  return tokens;
}

function tokenMatches(token: Token, cp: number): boolean {
  switch (token.kind) {
    case 'any':
      return true;
    case 'literal':
      return token.cp === cp;
    case 'class': {
      let inside = false;
      for (const r of token.ranges) {
        if (cp >= r.lo && cp <= r.hi) {
          inside = true;
          break;
        }
      }
      return inside !== token.negated;
    }
    case 'star':
      return false;
  }
}

function run(tokens: readonly Token[], subject: readonly number[]): MatchStats {
  let steps = 0;
  let p = 0;
  let s = 0;
  // Only the latest star is ever retried: earlier stars can absorb whatever a later retry would need.
  let starP = -1;
  let starS = 0;
  while (s < subject.length) {
    steps++;
    const token = tokens[p];
    if (token === STAR) {
      starP = p;
      starS = s;
      p++;
    } else if (token !== undefined && tokenMatches(token, subject[s] ?? 0)) {
      p++;
      s++;
    } else if (starP >= 0) {
      starS++;
      s = starS;
      p = starP + 1;
    } else {
      return { matched: false, steps };
    }
  }
  while (p < tokens.length && tokens[p] === STAR) {
    steps++;
    p++;
  }
  return { matched: p === tokens.length, steps };
}

const NO_MATCH: MatchStats = { matched: false, steps: 0 };

export function compileFnmatch(pattern: string): CompiledPattern {
  const tooLong = pattern.length > FNMATCH_MAX_LENGTH;
  const tokens = tooLong ? [] : tokenize(pattern.toLowerCase());
  const matchWithStats = (subject: string): MatchStats => {
    if (tooLong || subject.length > FNMATCH_MAX_LENGTH) return NO_MATCH;
    return run(tokens, toCodePoints(subject.toLowerCase()));
  };
  return {
    source: pattern,
    matches: (subject) => matchWithStats(subject).matched,
    matchWithStats,
  };
}
