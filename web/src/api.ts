import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AccessService } from "../../src/gen/debvisor/v1/access_pb.js";
import { AuditService } from "../../src/gen/debvisor/v1/audit_pb.js";
import { EventService } from "../../src/gen/debvisor/v1/event_pb.js";
import { MigrationService } from "../../src/gen/debvisor/v1/migration_pb.js";
import { NodeService } from "../../src/gen/debvisor/v1/node_pb.js";
import { EnrollmentService } from "../../src/gen/debvisor/v1/pki_pb.js";
import { StorageService } from "../../src/gen/debvisor/v1/storage_pb.js";
import { VmService } from "../../src/gen/debvisor/v1/vm_pb.js";
import {
  type WatchEventHeader,
  WatchEventType,
  WatchService,
} from "../../src/gen/debvisor/v1/watch_pb.js";

/** The header every panel request carries (the server refuses requests without it). */
const CSRF = { "x-debvisor-csrf": "1" };

let refreshing: Promise<boolean> | undefined;
/** Called when the session is gone for good (refresh refused). */
export let onSignedOut: (why: string) => void = () => {};
export function setSignedOutHandler(f: (why: string) => void): void {
  onSignedOut = f;
}

/** Exchanges the refresh cookie for new tokens, once for all callers waiting. */
export function refreshSession(quiet = false): Promise<boolean> {
  refreshing ??= authPost("refresh", {})
    .then((r) => {
      // Past the rate limit the session is still there: no reason to show the sign-in page.
      if (!r.ok && r.status !== 429 && !quiet) onSignedOut(r.message);
      return r.ok;
    })
    .finally(() => {
      refreshing = undefined;
    });
  return refreshing;
}

// On UNAUTHENTICATED: refresh once and retry (unary calls; streams reconnect by themselves).
const retryAfterRefresh: Interceptor = (next) => async (req) => {
  try {
    return await next(req);
  } catch (err) {
    if (req.stream || !(err instanceof ConnectError) || err.code !== Code.Unauthenticated)
      throw err;
    if (!(await refreshSession())) throw err;
    return next(req);
  }
};

const transport = createConnectTransport({
  baseUrl: "/rpc",
  useBinaryFormat: true,
  interceptors: [
    (next) => (req) => {
      for (const [k, v] of Object.entries(CSRF)) req.header.set(k, v);
      return next(req);
    },
    retryAfterRefresh,
  ],
  fetch: (input, init) => fetch(input, { ...init, credentials: "same-origin" }),
});

/** Typed clients of the same services hvctl uses. */
export const api = {
  nodes: createClient(NodeService, transport),
  vms: createClient(VmService, transport),
  migrations: createClient(MigrationService, transport),
  access: createClient(AccessService, transport),
  audit: createClient(AuditService, transport),
  storage: createClient(StorageService, transport),
  enrollment: createClient(EnrollmentService, transport),
  watch: createClient(WatchService, transport),
  events: createClient(EventService, transport),
};

/** POSTs to /auth/<path>; answers ok and the server's message. */
export async function authPost(
  path: string,
  body: unknown,
): Promise<{ ok: boolean; status: number; message: string; json: Record<string, unknown> }> {
  const res = await fetch(`/auth/${path}`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", ...CSRF },
    body: JSON.stringify(body),
  });
  const json = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  return { ok: res.ok, status: res.status, message: String(json.message ?? res.statusText), json };
}

/** GET /auth/<path> with the session cookie. */
export async function authGet(path: string): Promise<Record<string, unknown> | undefined> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const res = await fetch(`/auth/${path}`, { credentials: "same-origin", headers: CSRF });
    if (res.ok) return (await res.json()) as Record<string, unknown>;
    // Quietly: on a first visit there is no session, and that is no news.
    if (res.status !== 401 || attempt > 0 || !(await refreshSession(true))) return undefined;
  }
  return undefined;
}

/** A clear one-line message for an error from a call. */
export function describe(err: unknown): string {
  if (err instanceof ConnectError) {
    if (err.code === Code.NotFound) return `not found: ${err.rawMessage}`;
    if (err.code === Code.PermissionDenied)
      return `refused, your roles do not allow this: ${err.rawMessage} (PERMISSION_DENIED)`;
    // The catalogue's reason (docs/errors.md) names the refusal for people and searches alike.
    const reason = err.metadata.get("debvisor-error-reason");
    return reason === null || reason === "" ? err.rawMessage : `${err.rawMessage} (${reason})`;
  }
  return err instanceof Error ? err.message : String(err);
}

/**
 * Follows a server stream and reconnects after errors (1 s, then up to 10 s
 * apart) until `signal` aborts. UNAUTHENTICATED refreshes the session first.
 */
export async function follow<T>(
  open: (signal: AbortSignal) => AsyncIterable<T>,
  onItem: (item: T) => void,
  signal: AbortSignal,
  onError: (message: string) => void = () => {},
  reopenAtEnd = false,
  onBreak: (err: unknown) => void = () => {},
): Promise<void> {
  let delay = 1000;
  while (!signal.aborted) {
    let delivered = false;
    const openedAt = Date.now();
    try {
      for await (const item of open(signal)) {
        delay = 1000;
        delivered = true;
        onItem(item);
      }
      if (!reopenAtEnd) return;
      await new Promise((r) => setTimeout(r, delay));
    } catch (err) {
      if (signal.aborted) return;
      onBreak(err);
      if (err instanceof ConnectError && err.code === Code.Unauthenticated) {
        if (!(await refreshSession())) return;
        // A stream that worked until its access token ran out (the server ends it then; a
        // quiet one delivers nothing meanwhile): open it again at once with the new one,
        // with nothing to tell.
        if (delivered || Date.now() - openedAt > 2000) continue;
      }
      if (
        err instanceof ConnectError &&
        (err.code === Code.NotFound ||
          err.code === Code.PermissionDenied ||
          err.code === Code.InvalidArgument)
      ) {
        onError(describe(err));
        return;
      }
      onError(`${describe(err)}; reconnecting`);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(10_000, delay * 2);
    }
  }
}

/**
 * Keeps a live list from a watch stream (the whole list, SYNCED, then
 * changes): `draw` runs with the current objects after each SYNCED and each
 * change after it. Reconnects by itself (as `follow`), resuming from the last
 * SYNCED revision; a server that cannot resume sends the whole list again,
 * which then replaces the view. `onError` hears each failure, and "" once
 * the list is back.
 */
export function watchList<E extends { header?: WatchEventHeader }, T>(
  open: (sinceRevision: string, signal: AbortSignal) => AsyncIterable<E>,
  object: (e: E) => T | undefined,
  key: (t: T) => string,
  draw: (items: T[]) => void,
  signal: AbortSignal,
  onError: (message: string) => void = () => {},
): Promise<void> {
  let current = new Map<string, T>();
  let revision = "";
  // Changes since (re)connecting, held until SYNCED says whether they resume the view.
  let early: E[] | undefined;
  let failed = false;
  const apply = (into: Map<string, T>, e: E) => {
    const o = object(e);
    if (o === undefined) return;
    if (e.header?.type === WatchEventType.DELETED) into.delete(key(o));
    else into.set(key(o), o);
  };
  return follow(
    (s) => {
      early = [];
      return open(revision, s);
    },
    (e) => {
      if (e.header?.type === WatchEventType.SYNCED) {
        revision = e.header.revision;
        if (early !== undefined) {
          if (!e.header.resumed) current = new Map();
          for (const x of early) apply(current, x);
        }
        early = undefined;
        draw([...current.values()]);
        if (failed) onError("");
        failed = false;
      } else if (early !== undefined) early.push(e);
      else {
        apply(current, e);
        draw([...current.values()]);
      }
    },
    signal,
    (m) => {
      failed = true;
      onError(m);
    },
    true,
    (err) => {
      // The caller's access changed: not resumed, the whole list as it may see it now.
      if (
        err instanceof ConnectError &&
        err.metadata.get("debvisor-error-reason") === "ACCESS_CHANGED"
      )
        revision = "";
    },
  );
}
