import { RpcError } from "./rpc-error.js";

/** Largest page a client may ask for; larger requests are capped, not refused. */
export const MAX_PAGE_SIZE = 1000;
const TOKEN_PREFIX = "v1:";
const MAX_TOKEN_LENGTH = 512;

/** One page of a listing and the token for the next one ("" when this is the last). */
export interface Page<T> {
  readonly items: T[];
  readonly nextPageToken: string;
}

/**
 * Pages through `items`, which must be sorted by `keyOf`. The token carries the
 * last key returned, so a page stays correct when items are added or removed
 * between calls. `pageSize` 0 returns everything after the token (the
 * contract's "empty request lists everything").
 */
export function paginate<T>(
  items: readonly T[],
  keyOf: (item: T) => string,
  pageSize: number,
  pageToken: string,
): Page<T> {
  const after = pageToken === "" ? undefined : decodePageToken(pageToken);
  const start = after === undefined ? 0 : firstIndexAfter(items, keyOf, after);
  const size = pageSize === 0 ? items.length : Math.min(pageSize, MAX_PAGE_SIZE);
  const slice = items.slice(start, start + size);
  const more = start + slice.length < items.length && slice.length > 0;
  const last = slice[slice.length - 1];
  return {
    items: slice,
    nextPageToken: more && last !== undefined ? encodePageToken(keyOf(last)) : "",
  };
}

function firstIndexAfter<T>(items: readonly T[], keyOf: (item: T) => string, key: string): number {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keyOf(items[mid] as T) <= key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Encodes a cursor key as an opaque URL-safe token. */
export function encodePageToken(key: string): string {
  const bytes = new TextEncoder().encode(TOKEN_PREFIX + key);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Decodes a token from {@link encodePageToken}; anything else is PAGE_TOKEN_INVALID. */
export function decodePageToken(token: string): string {
  if (token.length > MAX_TOKEN_LENGTH || !/^[A-Za-z0-9_-]+$/.test(token)) {
    throw new RpcError("PAGE_TOKEN_INVALID");
  }
  let text: string;
  try {
    const bin = atob(token.replace(/-/g, "+").replace(/_/g, "/"));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new RpcError("PAGE_TOKEN_INVALID");
  }
  if (!text.startsWith(TOKEN_PREFIX)) throw new RpcError("PAGE_TOKEN_INVALID");
  return text.slice(TOKEN_PREFIX.length);
}
