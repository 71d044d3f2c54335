/**
 * A migration out of an agent's node: MIGRATE_OUT on the source's agent,
 * followed until its answer or until the source is presumed dead with the
 * job (then left to settling). The `migrate` of `createAgentDriver`.
 */
import { RpcError } from "../core/index.js";
import {
  MIGRATION_URI_LABEL,
  type MigrateOptions,
  type MigrationDestination,
  type MigrationPhase,
  migrationUriProblem,
  parseTransfer,
} from "../drivers/index.js";
import { OperationKind } from "../gen/debvisor/v1/agent_pb.js";
import { callUnlessDown } from "./agent-call-unless-down.js";
import type { AgentDriverDeps } from "./agent-driver.js";

/**
 * Migrates `vmId` from `nodeId` to `to` through the source's agent,
 * reaching the destination at `to.uri` or, if empty, at the URI its agent
 * reported. Fails OPERATION_INTERRUPTED once the source has been NOT_READY
 * for longer than `deps.downGraceMs` before the agent answered.
 */
export async function agentMigrateOut(
  nodeId: string,
  vmId: string,
  to: MigrationDestination,
  { live, signal, onProgress }: MigrateOptions,
  deps: AgentDriverDeps,
): Promise<void> {
  const uri = to.uri !== "" ? to.uri : await migrationUri(to.nodeId, signal, deps);
  // A source that went down with the job may never say how it ended (dead, or cut off
  // for good): past downGraceMs its outcome is left to settling, which decides from
  // what the nodes report. Waiting for it held the VM's lock for good, and failover
  // never restarted an HA VM whose node died mid-migration (an adversarial review).
  await callUnlessDown(
    {
      nodeId,
      kind: OperationKind.MIGRATE_OUT,
      vmId,
      params: { destination: to.nodeId, uri, live: String(live) },
      signal,
      onProgress: (p) =>
        onProgress?.({
          phase: phaseOf(p.phase),
          percent: p.percent,
          ...parseTransfer(p.message),
        }),
    },
    deps,
    `${nodeId} went down during the migration of ${vmId}; settled from what the nodes report`,
  );
}

/** How the destination's hypervisor is reached: what its agent reported. */
async function migrationUri(
  nodeId: string,
  signal: AbortSignal,
  { inventory }: AgentDriverDeps,
): Promise<string> {
  const node = await inventory.getNode(nodeId, signal);
  const uri = node?.summary.info?.labels[MIGRATION_URI_LABEL] ?? "";
  if (uri === "")
    throw new RpcError("BACKEND_UNAVAILABLE", {
      message: `${nodeId} has not said how to reach it for a migration (no agent?)`,
    });
  // What a node reports is not sent to another as it is: the source's libvirt acts on it.
  const problem = migrationUriProblem(uri);
  if (problem !== undefined)
    throw new RpcError("MIGRATION_NOT_ALLOWED", {
      message: `${nodeId} reported a migration URI that no source may connect to: ${problem}`,
    });
  return uri;
}

/**
 * A migration's phase from the agent's progress: its own phases as they
 * are; "started" (every operation's first word, before the driver says
 * anything) is still preparing; anything else is a transfer's detail.
 */
function phaseOf(phase: string): MigrationPhase {
  if (phase === "started") return "preparing";
  return phase === "preparing" || phase === "switchover" || phase === "completed"
    ? phase
    : "transferring";
}
