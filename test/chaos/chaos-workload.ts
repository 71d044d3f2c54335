import { StorageBackend } from "../../src/gen/debvisor/v1/storage_pb.js";
import type { ChaosCluster, ChaosDaemon } from "./chaos-cluster.js";
import type { ChaosHistory } from "./chaos-history.js";
import { errorText, type Outcomes } from "./chaos-outcomes.js";
import type { ChaosRandom } from "./chaos-random.js";

const MIB = 1024n * 1024n;
/** VMs the workload creates at most (the cluster's four nodes hold them easily). */
const MAX_VMS = 8;
/** Calls in flight at most; a call that hangs on a frozen daemon is given up after CALL_MS. */
const MAX_IN_FLIGHT = 4;
const CALL_MS = 8000;

/** The operations the workload issues, by name. */
export const OPERATION_KINDS = [
  "create",
  "start",
  "stop",
  "migrate",
  "cancel",
  "drain",
  "uncordon",
  "failover",
] as const;

/**
 * The randomized operations of a chaos run: create, start, stop, migrate,
 * cancel, drain, uncordon and failover, each through the client of a
 * daemon picked at random (a dead or frozen one fails or times out: that
 * reply is history too). Operations and migrations they start are handed
 * to `outcomes` to be followed to their end.
 */
export function createWorkload(options: {
  readonly cluster: ChaosCluster;
  readonly random: ChaosRandom;
  readonly history: ChaosHistory;
  readonly outcomes: Outcomes;
  readonly nodes: readonly string[];
}) {
  const { cluster, random, history, outcomes, nodes } = options;
  const vms: string[] = [];
  const cordoned = new Set<string>();
  let created = 0;
  let inFlight = 0;
  let issued = 0;

  const daemon = (): ChaosDaemon => random.pick(cluster.daemons);
  const call = async <T>(
    what: string,
    vm: string,
    d: ChaosDaemon,
    run: () => Promise<T>,
  ): Promise<T | undefined> => {
    issued++;
    const answered = outcomes.issued(vm);
    history.add("op", `${what} via ${d.name}`);
    try {
      return await run();
    } catch (err) {
      history.add("reply", `${what}: ${errorText(err)}`);
      return undefined;
    } finally {
      answered();
    }
  };

  const create = async (d: ChaosDaemon, ha: boolean) => {
    const vmId = `s${history.seed}-${++created}`;
    const at = history.now();
    const op = await call(`create ${vmId} ha=${ha}`, vmId, d, () =>
      d.clients.vms.createVm(
        {
          vmId,
          spec: {
            name: vmId,
            vcpus: 1,
            memoryBytes: 256n * MIB,
            ha,
            disks: [
              {
                dataset: {
                  backend: StorageBackend.BACKEND_RBD,
                  pool: "rbd",
                  name: `${vmId}-disk0`,
                },
              },
            ],
          },
          start: true,
          requestId: `chaos-${history.seed}-${vmId}`,
        },
        { timeoutMs: CALL_MS },
      ),
    );
    // Listed even when the call failed: it may have been accepted before the reply was lost.
    vms.push(vmId);
    if (op !== undefined) {
      history.add("reply", `create ${vmId}: ${op.id} on ${op.nodeId?.id}`);
      outcomes.track(op.id, "operation", "create", vmId, at);
    }
  };

  const actions: Record<(typeof OPERATION_KINDS)[number], (d: ChaosDaemon) => Promise<void>> = {
    async create(d) {
      if (vms.length < MAX_VMS) await create(d, random.chance(0.7));
    },
    async start(d) {
      const vmId = random.pick(vms);
      const at = history.now();
      const op = await call(`start ${vmId}`, vmId, d, () =>
        d.clients.vms.startVm({ vmId }, { timeoutMs: CALL_MS }),
      );
      if (op !== undefined) {
        history.add("reply", `start ${vmId}: ${op.id}`);
        outcomes.track(op.id, "operation", "start", vmId, at);
      }
    },
    async stop(d) {
      const vmId = random.pick(vms);
      const at = history.now();
      const op = await call(`stop ${vmId}`, vmId, d, () =>
        d.clients.vms.stopVm({ vmId, force: random.chance(0.5) }, { timeoutMs: CALL_MS }),
      );
      if (op !== undefined) {
        history.add("reply", `stop ${vmId}: ${op.id}`);
        outcomes.track(op.id, "operation", "stop", vmId, at);
      }
    },
    async migrate(d) {
      const vmId = random.pick(vms);
      const target = random.chance(0.5) ? random.pick(nodes) : undefined;
      const at = history.now();
      const m = await call(`migrate ${vmId} to ${target ?? "(planned)"}`, vmId, d, () =>
        d.clients.migrations.startMigration(
          {
            vm: { vmId },
            target: target === undefined ? undefined : { nodeId: { id: target } },
            allowDowntime: true,
          },
          { timeoutMs: CALL_MS },
        ),
      );
      if (m !== undefined) {
        history.add("reply", `migrate ${vmId}: ${m.migrationId} to ${m.target?.nodeId?.id}`);
        outcomes.track(m.migrationId, "migration", "migrate", vmId, at);
      }
    },
    async cancel(d) {
      const ids = outcomes.openMigrationIds();
      if (ids.length === 0) return;
      const id = random.pick(ids);
      const m = await call(`cancel ${id}`, "", d, () =>
        d.clients.migrations.cancelMigration({ migrationId: id }, { timeoutMs: CALL_MS }),
      );
      if (m !== undefined) history.add("reply", `cancel ${id}: accepted`);
    },
    async drain(d) {
      const node = random.pick(nodes);
      cordoned.add(node);
      await call(`drain ${node}`, "", d, async () => {
        const signal = AbortSignal.timeout(4 * CALL_MS);
        for await (const p of d.clients.nodes.drainNode(
          { id: { id: node }, maxParallel: 2, allowDowntime: true },
          { signal },
        )) {
          const m = p.migration;
          if (m !== undefined && m.migrationId !== "")
            outcomes.track(m.migrationId, "migration", "drain-migrate", m.vm?.vmId ?? "");
          if (p.done)
            history.add(
              "reply",
              `drain ${node}: done, ${p.succeeded} moved, ${p.failed} failed of ${p.total}`,
            );
        }
      });
    },
    async uncordon(d) {
      const node = random.pick(nodes);
      const r = await call(`uncordon ${node}`, "", d, () =>
        d.clients.nodes.uncordonNode({ id: { id: node } }, { timeoutMs: CALL_MS }),
      );
      if (r !== undefined) {
        cordoned.delete(node);
        history.add("reply", `uncordon ${node}: ok`);
      }
    },
    async failover(d) {
      const vmId = random.pick(vms);
      const r = await call(`failover ${vmId}`, vmId, d, () =>
        d.clients.migrations.failoverVM({ vmId }, { timeoutMs: CALL_MS }),
      );
      if (r !== undefined) {
        const target = r.target?.nodeId?.id ?? "";
        history.add("reply", `failover ${vmId}: ${r.migrationId} to ${target} ${r.message}`);
        await outcomes.failedOver(vmId, target, r.migrationId);
      }
    },
  };
  /** How often each kind is picked (weights). */
  const weights: [keyof typeof actions, number][] = [
    ["create", 1],
    ["start", 4],
    ["stop", 2],
    ["migrate", 5],
    ["cancel", 1],
    ["drain", 1],
    ["uncordon", 2],
    ["failover", 2],
  ];
  const total = weights.reduce((n, [, w]) => n + w, 0);
  const choose = (): keyof typeof actions => {
    let x = random.next() * total;
    for (const [k, w] of weights) {
      x -= w;
      if (x < 0) return k;
    }
    return "start";
  };

  return {
    issued: () => issued,
    /** The VMs the run starts with: `count` created through both daemons, most of them HA. */
    async seed(count: number) {
      for (let i = 0; i < count; i++) {
        const d = cluster.daemons[i % 2] as ChaosDaemon;
        await create(d, i % 4 !== 3);
      }
    },
    /** Starts one randomly chosen operation unless too many are in flight (not awaited). */
    step() {
      if (inFlight >= MAX_IN_FLIGHT || vms.length === 0) return;
      const kind = choose();
      inFlight++;
      void actions[kind](daemon()).finally(() => {
        inFlight--;
      });
    },
    /** Uncordons every node the workload may have cordoned (part of the heal). */
    async uncordonAll() {
      for (const node of nodes) {
        const d = cluster.daemons.find((x) => x.state === "up");
        await d?.clients.nodes
          .uncordonNode({ id: { id: node } }, { timeoutMs: CALL_MS })
          .catch(() => {});
      }
      cordoned.clear();
    },
    inFlight: () => inFlight,
  };
}
