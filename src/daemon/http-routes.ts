import type { HealthReport } from './health.ts';
import type { HttpReply, HttpRequest, Route } from './http-servers.ts';

/** Test hooks behind UNSAFE_TEST_HOOKS=true: make a poller thread, or the main thread, fail as a bug would. */
export interface DebugHooks {
  crashPoller(domain: string, how: 'exception' | 'rejection'): boolean;
  failMainThread(how: 'exception' | 'rejection'): void;
}

/** `/health` (`/healthz`) and `/ready` (`/readyz`) on the health port, plus the test hooks when enabled. */
export function healthRoute(health: () => HealthReport, hooks?: DebugHooks): Route {
  return (request) => {
    const { pathname } = request.url;
    if (pathname === '/health' || pathname === '/healthz') return healthReply(health(), 'healthy');
    if (pathname === '/ready' || pathname === '/readyz') return healthReply(health(), 'ready');
    if (hooks && request.method === 'POST') return debugReply(request, hooks);
    return undefined;
  };
}

/** `/metrics` on the metrics port. */
export function metricsRoute(render: () => Promise<string>, contentType: string): Route {
  return async (request) =>
    request.url.pathname === '/metrics' ? { status: 200, body: await render(), contentType } : undefined;
}

function healthReply(report: HealthReport, which: 'healthy' | 'ready'): HttpReply {
  return {
    status: report[which] ? 200 : 503,
    body: JSON.stringify(report.body),
    contentType: 'application/json',
  };
}

function debugReply(request: HttpRequest, hooks: DebugHooks): HttpReply | undefined {
  const how = request.url.searchParams.get('how') === 'rejection' ? 'rejection' : 'exception';
  if (request.url.pathname === '/debug/crash') {
    const domain = request.url.searchParams.get('domain') ?? '';
    if (!hooks.crashPoller(domain, how)) return { status: 404, body: 'no such running poller\n' };
    return { status: 202, body: 'crashing\n' };
  }
  if (request.url.pathname === '/debug/fail-main') {
    hooks.failMainThread(how);
    return { status: 202, body: 'failing\n' };
  }
  return undefined;
}
