/**
 * Passes one HTTP request on to an upstream and its answer back, for the test and benchmark proxies that sit in
 * front of the emulators. An upstream that cannot be reached becomes a 502 naming the proxy.
 */
import http from 'node:http';

export function forwardHttp(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  options: { target: URL; agent: http.Agent; proxy: string; onAnswer?: (status: number) => void },
): void {
  const forward = http.request(
    {
      host: options.target.hostname,
      port: options.target.port,
      method: req.method,
      path: req.url,
      headers: req.headers,
      agent: options.agent,
    },
    (upstreamRes) => {
      const status = upstreamRes.statusCode ?? 502;
      options.onAnswer?.(status);
      res.writeHead(status, upstreamRes.headers);
      upstreamRes.pipe(res);
    },
  );
  forward.on('error', (error) => {
    if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
    res.end(`${options.proxy}: ${error.message}`);
  });
  req.pipe(forward);
}
