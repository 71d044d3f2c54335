// The HTTP shapes of the panel's /auth/ endpoints: the request as the
// panel's listener hands it over, the answer, and the answer of a refusal.

import { RpcError } from "../core/index.js";

/** A sign-in request as the panel's HTTP listener hands it over. */
export interface AuthRequest {
  readonly method: string;
  /** Path below /auth/, e.g. `login`. */
  readonly path: string;
  readonly headers: { get(name: string): string | undefined };
  /** Origins this request may come from: the panel's own (scheme://host:port). */
  readonly origins: readonly string[];
  /** Remote address (no port). */
  readonly source: string;
  /** Parsed JSON body (at most a few KiB), or undefined. */
  readonly body: unknown;
}

/** What to answer. */
export interface AuthResponse {
  readonly status: number;
  readonly json: unknown;
  readonly cookies: readonly string[];
}

const HTTP: Record<number, number> = { 3: 400, 5: 404, 7: 403, 8: 429, 16: 401 };

/** A body field that is a string of at most `max` characters, else undefined. */
export const str = (v: unknown, max: number) =>
  typeof v === "string" && v.length <= max ? v : undefined;

/** The answer refusing a request for `reason`: its HTTP status and the catalogue's client message. */
export const fail = (
  reason: ConstructorParameters<typeof RpcError>[0],
  message?: string,
  retryAfterMs?: number,
) => {
  const e = new RpcError(reason, { message, retryAfterMs });
  return {
    status: HTTP[e.code] ?? 400,
    json: { reason: e.reason, message: e.clientMessage, retryAfterMs },
    cookies: [],
  };
};
