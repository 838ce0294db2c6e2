/**
 * A DNS server on 127.0.0.1 (UDP, port 0) that knows MX records, for doctor's MX check (DOCTOR_DNS_SERVERS). A
 * domain it was told about gets its MX records (none: NODATA), any other name NXDOMAIN. `silent: true` makes a
 * server that reads every query and never answers, for deadline tests.
 */
import dgram from 'node:dgram';

export interface MxAnswer {
  exchange: string;
  priority: number;
}

export interface DnsServer {
  /** `127.0.0.1:PORT`, for DOCTOR_DNS_SERVERS. */
  readonly address: string;
  readonly port: number;
  /** Queries received so far. */
  readonly queries: number;
  setMx(domain: string, records: readonly MxAnswer[]): void;
  stop(): Promise<void>;
}

const TYPE_MX = 15;

export async function startDnsServer(options: { silent?: boolean } = {}): Promise<DnsServer> {
  const zones = new Map<string, readonly MxAnswer[]>();
  const socket = dgram.createSocket('udp4');
  let queries = 0;
  socket.on('message', (query, peer) => {
    queries += 1;
    if (options.silent) return;
    const answer = respond(query, zones);
    if (answer !== undefined) socket.send(answer, peer.port, peer.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => resolve());
  });
  const port = socket.address().port;
  let stopped: Promise<void> | undefined;
  return {
    address: `127.0.0.1:${port}`,
    port,
    get queries() {
      return queries;
    },
    setMx(domain, records) {
      zones.set(domain.toLowerCase(), records);
    },
    stop: () => (stopped ??= new Promise((resolve) => socket.close(() => resolve()))),
  };
}

/** The answer to one query: the question echoed, MX records for a known domain, NXDOMAIN for others. */
function respond(query: Buffer, zones: ReadonlyMap<string, readonly MxAnswer[]>): Buffer | undefined {
  if (query.length < 12) return undefined;
  const question = readQuestion(query, 12);
  if (question === undefined) return undefined;
  const records = zones.get(question.name.toLowerCase());
  const answers = records !== undefined && question.type === TYPE_MX ? records : [];
  const header = Buffer.alloc(12);
  header.writeUInt16BE(query.readUInt16BE(0), 0);
  // QR, opcode 0, RD copied, RA; rcode 3 (NXDOMAIN) for a name we do not know.
  header.writeUInt16BE(0x8080 | (query.readUInt16BE(2) & 0x0100) | (records === undefined ? 3 : 0), 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(answers.length, 6);
  return Buffer.concat([header, query.subarray(12, question.end), ...answers.map(mxRecord)]);
}

function readQuestion(query: Buffer, start: number): { name: string; type: number; end: number } | undefined {
  const labels: string[] = [];
  let offset = start;
  for (;;) {
    const length = query[offset];
    if (length === undefined || length > 63) return undefined;
    offset += 1;
    if (length === 0) break;
    labels.push(query.toString('latin1', offset, offset + length));
    offset += length;
  }
  if (offset + 4 > query.length) return undefined;
  return { name: labels.join('.'), type: query.readUInt16BE(offset), end: offset + 4 };
}

function mxRecord(record: MxAnswer): Buffer {
  const exchange = encodeName(record.exchange);
  const fixed = Buffer.alloc(12);
  fixed.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
  fixed.writeUInt16BE(TYPE_MX, 2);
  fixed.writeUInt16BE(1, 4); // class IN
  fixed.writeUInt32BE(300, 6);
  fixed.writeUInt16BE(2 + exchange.length, 10);
  const preference = Buffer.alloc(2);
  preference.writeUInt16BE(record.priority, 0);
  return Buffer.concat([fixed, preference, exchange]);
}

function encodeName(name: string): Buffer {
  const labels = name.replace(/\.$/, '').split('.');
  return Buffer.concat([
    ...labels.map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label, 'latin1')])),
    Buffer.from([0]),
  ]);
}
