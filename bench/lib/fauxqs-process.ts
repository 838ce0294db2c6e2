/** fauxqs in a process of its own (its CPU is not the benchmark's): prints its endpoint, runs until killed. */
import { startFauxqs } from '../../test/harness/emulators.ts';

const fauxqs = await startFauxqs();
process.stdout.write(`${fauxqs.endpoint}\n`);
