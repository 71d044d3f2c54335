import { ConsecutiveBreaker, circuitBreaker, handleWhen } from "cockatiel";
import type { IOptions } from "etcd3";
import { isUnsent } from "./etcd-calls.js";

type FaultPolicy = NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>;

/**
 * etcd3's default policies retry every call (a write could apply twice) and
 * trip a circuit breaker that keeps failing calls for 5 s after etcd is back.
 * The store decides retries itself, so the client only passes calls through.
 */
// etcd3's calls ignore the policy's signal: one that never aborts serves them all
// (a new AbortController per call was two allocations and a listener list per etcd call).
const NEVER_ABORTED = new AbortController().signal;
const passThrough: Pick<FaultPolicy, "execute"> = {
  execute: (fn) => Promise.resolve().then(() => fn({ signal: NEVER_ABORTED })),
};

/** How long a member that refused a connection is left out before one call tries it again. */
export const HOST_DOWN_MS = 1000;
/** How long a member whose keepalive stream went silent is left out of new calls and streams. */
export const HOST_SILENT_MS = 10_000;

/** The health of a store's etcd members, as etcd3's fault handling sees it. */
export interface EtcdHosts {
  /** etcd3's `faultHandling` option. */
  readonly faultHandling: NonNullable<IOptions["faultHandling"]>;
  /**
   * Leaves the member that `stream` was opened on out of new calls and
   * streams for HOST_SILENT_MS: it holds connections open but answers
   * nothing (a stopped process, a partition that drops packets). At most a
   * minority of the members is left out at a time (one of three): a
   * majority must be up for etcd to work at all.
   */
  setAside(stream: object): void;
  /** Opens a call or stream elsewhere than on the member `stream` was opened on, when another is in. */
  openAvoiding<T>(stream: object | undefined, open: () => Promise<T>): Promise<T>;
  /** Ends every setting-aside early (the store is closing). */
  close(): void;
}

type Breaker = ReturnType<typeof circuitBreaker>;

/**
 * etcd3 fault handling for a store of `hosts` endpoints. The client itself
 * never retries (the store decides, knowing reads from writes). With several
 * members, each has a circuit breaker (cockatiel, as etcd3's default) that
 * opens on the first call that could not even be sent to it (connection
 * refused, no leader there): etcd3's pool then skips that member and picks
 * another, and after HOST_DOWN_MS lets one call try it again. Errors after a
 * call was sent never open it; a member is left out on purpose by holding
 * its breaker open (cockatiel's isolate).
 */
export function createEtcdHosts(hosts: number): EtcdHosts {
  /** The breaker of the member each stream was opened on. */
  const breakerOf = new WeakMap<object, Breaker>();
  /** Breakers held open, with how many hold each. */
  const held = new Map<Breaker, { handle: { dispose(): void }; holds: number }>();
  const aside = new Map<Breaker, NodeJS.Timeout>();
  let closed = false;

  const hostPolicy = (): FaultPolicy => {
    const breaker = circuitBreaker(handleWhen(isUnsent), {
      halfOpenAfter: HOST_DOWN_MS,
      breaker: new ConsecutiveBreaker(1),
    });
    const policy: Pick<FaultPolicy, "execute"> = {
      execute: (fn, signal) =>
        breaker.execute((ctx) => {
          const made = fn(ctx);
          // A stream is returned as is (a unary call returns a promise).
          if (typeof made === "object" && made !== null && !("then" in made)) {
            breakerOf.set(made, breaker);
          }
          return made;
        }, signal),
    };
    return policy as FaultPolicy;
  };

  /** Holds `breaker` open until the returned release runs; never the last member in. */
  const hold = (breaker: Breaker | undefined): (() => void) | undefined => {
    if (breaker === undefined) return undefined;
    const h = held.get(breaker);
    if (h !== undefined) h.holds++;
    else if (held.size + 1 < hosts) held.set(breaker, { handle: breaker.isolate(), holds: 1 });
    else return undefined;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const now = held.get(breaker);
      if (now === undefined || --now.holds > 0) return;
      held.delete(breaker);
      now.handle.dispose();
    };
  };

  return {
    faultHandling: {
      host: () => (hosts === 1 ? (passThrough as FaultPolicy) : hostPolicy()),
      global: passThrough as FaultPolicy,
    },
    setAside(stream) {
      if (closed) return;
      const breaker = breakerOf.get(stream);
      if (breaker === undefined || aside.has(breaker)) return;
      if (aside.size + 1 > Math.floor((hosts - 1) / 2)) return;
      const release = hold(breaker);
      if (release === undefined) return;
      const timer = setTimeout(() => {
        aside.delete(breaker);
        release();
      }, HOST_SILENT_MS);
      timer.unref();
      aside.set(breaker, timer);
    },
    openAvoiding(stream, open) {
      const release = hold(stream === undefined ? undefined : breakerOf.get(stream));
      const opened = open();
      if (release !== undefined) opened.then(release, release);
      return opened;
    },
    close() {
      closed = true;
      for (const timer of aside.values()) clearTimeout(timer);
      aside.clear();
      for (const { handle } of held.values()) handle.dispose();
      held.clear();
    },
  };
}
