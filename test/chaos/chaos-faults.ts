import { FENCE_CYCLE_MS } from "./chaos-bounds.js";
import type { ChaosCluster } from "./chaos-cluster.js";
import type { ChaosHistory } from "./chaos-history.js";
import type { ChaosRandom } from "./chaos-random.js";

/** The faults a chaos run injects, by name. */
export const FAULT_KINDS = [
  "partition",
  "kill-agent",
  "pause-agent",
  "kill-daemon",
  "pause-daemon",
  "fail-migration-at",
  "clock-offset",
  "etcd-restart",
] as const;
type FaultKind = (typeof FAULT_KINDS)[number];

/** A fault in force and how to undo it. */
interface Active {
  readonly kind: FaultKind;
  readonly target: string;
  readonly until: number;
  heal(): Promise<void>;
}

/**
 * Injects faults at run time and heals each after a random span: a
 * partition (`debvisor-agent fault partition`, then `heal`), an agent
 * killed with SIGKILL and started again, an agent or a daemon frozen with
 * SIGSTOP and resumed with SIGCONT, a daemon killed with SIGKILL and
 * restarted, migrations from a node failing at a percent, a node's clock
 * offset by several seconds, and a restart of the etcd member. At most two
 * agents and one daemon are faulted at a time (both daemons out at once is
 * a control-plane outage, issue 16's V6, not covered here).
 */
export function createFaults(options: {
  readonly cluster: ChaosCluster;
  readonly random: ChaosRandom;
  readonly history: ChaosHistory;
  readonly nodes: readonly string[];
  /** The nodes running an HA VM that should run: the run's first partition cuts one of them off. */
  readonly haNodes?: () => Promise<readonly string[]>;
}) {
  const { cluster, random, history, nodes } = options;
  const active: Active[] = [];
  let lastAt = 0;
  let first = true;
  const mark = (kind: string, text: string) => {
    lastAt = history.now();
    history.add("fault", `${kind} ${text}`);
  };
  const busy = (target: string) => active.some((a) => a.target === target);
  const agentFaults = () => active.filter((a) => nodes.includes(a.target)).length;
  const daemonFaulted = () => active.some((a) => a.target.startsWith("rpcd-"));

  const inject = async (kind: FaultKind): Promise<Active | undefined> => {
    const span = (min: number, max: number) => history.now() + random.int(min, max);
    if (kind === "etcd-restart") {
      // Rarer than the others: each one is a store outage of a second or two for everyone.
      if (!random.chance(0.4)) return undefined;
      mark(kind, "");
      await cluster.etcd.restart?.();
      history.add("fault", "etcd-restart done");
      return undefined;
    }
    if (kind === "kill-daemon" || kind === "pause-daemon") {
      if (daemonFaulted()) return undefined;
      const i = random.int(0, 1);
      const d = cluster.daemons[i];
      if (d === undefined || d.state !== "up") return undefined;
      if (kind === "kill-daemon") {
        mark(kind, d.name);
        await cluster.killDaemon(i);
        return {
          kind,
          target: d.name,
          until: span(0, 5000),
          heal: async () => {
            mark("restart-daemon", d.name);
            await cluster.startDaemon(i);
          },
        };
      }
      mark(kind, `${d.name} (SIGSTOP)`);
      cluster.signalDaemon(i, "SIGSTOP");
      return {
        kind,
        target: d.name,
        until: span(500, 8000),
        heal: async () => {
          mark("resume-daemon", `${d.name} (SIGCONT)`);
          cluster.signalDaemon(i, "SIGCONT");
        },
      };
    }
    const free = nodes.filter((n) => !busy(n));
    if (free.length === 0 || agentFaults() >= 2) return undefined;
    // The first partition must end in a failover: it cuts off a node with an HA VM to move.
    const ha =
      kind === "partition" && first ? ((await options.haNodes?.().catch(() => [])) ?? []) : [];
    const aimed = free.filter((n) => ha.includes(n));
    const node = random.pick(aimed.length > 0 ? aimed : free);
    switch (kind) {
      case "partition":
        mark(kind, node);
        await cluster.fault(node, "partition");
        return {
          kind,
          target: node,
          // The run's first and 40% of the others outlast a fence cycle: the node's HA VMs
          // are restarted elsewhere while it is cut off but alive, the case fencing is for
          // (shorter ones almost always heal before a failover's copy could be seen).
          until:
            first || random.chance(0.4)
              ? span(FENCE_CYCLE_MS + 2000, FENCE_CYCLE_MS + 10_000)
              : span(1000, 9000),
          heal: async () => {
            mark("heal", node);
            await cluster.fault(node, "heal");
          },
        };
      case "kill-agent":
        mark(kind, `${node} (SIGKILL)`);
        cluster.killAgent(node);
        return {
          kind,
          target: node,
          until: span(1000, 12_000),
          heal: async () => {
            mark("revive-agent", node);
            cluster.startAgent(node);
          },
        };
      case "pause-agent":
        mark(kind, `${node} (SIGSTOP)`);
        cluster.signalAgent(node, "SIGSTOP");
        return {
          kind,
          target: node,
          until: span(500, 9000),
          heal: async () => {
            mark("resume-agent", `${node} (SIGCONT)`);
            cluster.signalAgent(node, "SIGCONT");
          },
        };
      case "fail-migration-at": {
        const percent = random.int(10, 90);
        mark(kind, `${node} ${percent}`);
        await cluster.fault(node, "fail-migration-at", String(percent));
        return {
          kind,
          target: node,
          until: span(3000, 15_000),
          heal: async () => {
            mark("clear", `${node} (fail-migration-at)`);
            await cluster.fault(node, "clear");
          },
        };
      }
      case "clock-offset": {
        const ms = random.pick([-1, 1]) * random.int(3000, 9000);
        mark(kind, `${node} ${ms}`);
        await cluster.fault(node, "clock-offset", String(ms));
        return {
          kind,
          target: node,
          until: span(3000, 15_000),
          heal: async () => {
            mark("clear", `${node} (clock-offset)`);
            await cluster.fault(node, "clear");
          },
        };
      }
    }
  };

  return {
    lastAt: () => lastAt,
    /** The nodes partitioned now. */
    cutOff: () => active.filter((a) => a.kind === "partition").map((a) => a.target),
    /** Injects one random fault (if the limits allow) and heals those whose time is up. */
    async step() {
      const now = history.now();
      for (const a of active.filter((x) => x.until <= now)) {
        active.splice(active.indexOf(a), 1);
        await a.heal();
      }
      // Every run starts with a partition that outlasts a fence cycle (see inject): even a
      // short run sees a failover away from a node that is cut off but alive.
      const f = await inject(first ? "partition" : random.pick(FAULT_KINDS));
      first = false;
      if (f !== undefined) active.push(f);
    },
    /** Heals every fault in force: the end of the chaos. */
    async healAll() {
      for (const a of active.splice(0)) await a.heal();
      mark("healed", "all faults");
    },
  };
}
