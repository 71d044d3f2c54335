/** One page of a listing: its items and the token of the next page ("" when it was the last). */
export interface Page<T> {
  readonly items: readonly T[];
  readonly next: string;
}

/** Most pages a listing follows, so a server that never ends a listing cannot keep hvctl busy forever. */
const MAX_PAGES = 1000;

/**
 * Follows a paged listing from the first page to the last (or `limit`
 * items) and returns every item, for `list` commands:
 * `await allPages((pageToken) => client.listVms({ pageToken }).then((r) => ({ items: r.vms, next: r.nextPageToken })))`.
 */
export async function allPages<T>(
  fetch: (pageToken: string) => Promise<Page<T>>,
  limit = Number.POSITIVE_INFINITY,
): Promise<T[]> {
  const out: T[] = [];
  let pageToken = "";
  for (let pages = 0; pages < MAX_PAGES && out.length < limit; pages++) {
    const page = await fetch(pageToken);
    out.push(...page.items);
    pageToken = page.next;
    if (pageToken === "") break;
  }
  return out.length > limit ? out.slice(0, limit) : out;
}
