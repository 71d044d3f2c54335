/**
 * The failover controller's leadership: the `controllers/failover` key on a
 * lease this process keeps alive, taken with a create-if-absent
 * transaction, so two daemons sharing one store never both act. Decisions
 * are made conditional on the key's revision at election (`elected`).
 */
import type { Logger } from "../core/index.js";
import type { Compare, KvStore, Lease } from "../store/index.js";

/** The election key: its value is the leading runner id. */
export const LEADER_KEY = "controllers/failover";

/** What {@link createFailoverLeadership} works with. */
export interface FailoverLeadershipDeps {
  readonly store: KvStore;
  readonly logger: Logger;
  /** This process's runner id: the leader key's value. */
  readonly runnerId: string;
  /** TTL of the leadership lease. */
  readonly ttl: number;
  /** The controller's stop: aborts lease and election calls. */
  readonly stop: AbortSignal;
}

/** This process's hold on the controller's election. */
export interface FailoverLeadership {
  /** Keeps the lease alive when leading, else tries to take the key; false when not leading. Does not change isLeader(). */
  lead(): Promise<boolean>;
  /** lead(), its answer kept as isLeader(). */
  take(): Promise<boolean>;
  /** Whether this process leads, as last taken. */
  isLeader(): boolean;
  /** Marks this process as not leading (a pass found the leadership gone). */
  lost(): void;
  /** The election key as it was when this process was elected: a compare for decisions. */
  elected(): Compare;
  /** Renews the lease the election was won on while leading; never takes the election. */
  renew(): Promise<void>;
  /** Revokes the lease when leading; then not leading. */
  resign(): Promise<void>;
}

/** Creates the {@link FailoverLeadership}. */
export function createFailoverLeadership(deps: FailoverLeadershipDeps): FailoverLeadership {
  const { store, logger, runnerId, ttl } = deps;
  const stop = deps.stop;
  let lease: Lease | undefined;
  let leader = false;
  /** Revision of this process's election key: its decisions hold only while the key is unchanged. */
  let elected = 0;

  /** The lead() under way: a pass's VMs ask at once, and two grants would race for `lease`. */
  let leading: Promise<boolean> | undefined;
  function lead(): Promise<boolean> {
    leading ??= leadOnce().finally(() => {
      leading = undefined;
    });
    return leading;
  }

  async function leadOnce(): Promise<boolean> {
    try {
      if (lease !== undefined && leader) {
        await lease.keepAlive({ signal: stop });
        return true;
      }
      lease ??= await store.grantLease(ttl, { signal: stop });
      const txn = await store.txn(
        {
          compares: [{ key: LEADER_KEY, modRevision: 0 }],
          success: [
            {
              type: "put",
              key: LEADER_KEY,
              value: new TextEncoder().encode(runnerId),
              lease: lease.id,
            },
          ],
        },
        { signal: stop },
      );
      if (txn.succeeded) {
        elected = txn.revision;
        logger.info({ runner: runnerId }, "failover controller: leading");
      }
      return txn.succeeded;
    } catch (err) {
      if (leader) logger.warn({ err }, "failover controller: leadership lost");
      lease = undefined;
      return false;
    }
  }

  return {
    lead,
    async take() {
      leader = await lead();
      return leader;
    },
    isLeader: () => leader,
    lost() {
      leader = false;
    },
    elected: () => ({ key: LEADER_KEY, modRevision: elected }),
    // A renewal that took the election mid-pass would move `elected` under the pass:
    // only the lease the election was won on (see failover-controller.ts).
    async renew() {
      const held = lease;
      if (leader && held !== undefined) await held.keepAlive({ signal: stop });
    },
    async resign() {
      if (leader) await lease?.revoke().catch(() => undefined);
      leader = false;
    },
  };
}
