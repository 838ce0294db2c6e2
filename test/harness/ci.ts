/**
 * Whether the tests run in CI (`CI` set to anything but '', '0' or 'false', as `.ci/run` and most CI services do).
 * A test that needs something the machine may lack (promtool, dist/, a real mail server) skips on a developer's
 * machine but fails in CI, so a CI machine that lost it cannot go green by skipping.
 */
export const inCi =
  process.env.CI !== undefined && !['', '0', 'false'].includes(process.env.CI.toLowerCase());

/** `skip` option of a test that needs something missing here: a reason outside CI, false (so it runs and fails) in CI. */
export function skipUnlessCi(missing: string | undefined): string | false {
  return missing !== undefined && !inCi ? missing : false;
}
