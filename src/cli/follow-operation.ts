/*
 * Following a VM lifecycle operation from hvctl: the one-line summary of an
 * operation, and `followOperation`, which prints an accepted operation and
 * watches it to its end (used by vm create/start/stop/reboot/delete and
 * `vm operation --wait`).
 */
import { NodeReadiness, NodeService } from "../gen/debvisor/v1/node_pb.js";
import {
  type VmOperation,
  VmOperationKind,
  VmOperationSchema,
  VmOperationState,
  VmService,
} from "../gen/debvisor/v1/vm_pb.js";
import type { CliContext } from "./cli-context.js";
import { messageJson } from "./output.js";
import { watchProgress } from "./progress.js";

/** An enum value's name in lower case ("unspecified" when it has none). */
export const lower = (name: string | undefined) => (name ?? "unspecified").toLowerCase();
/** The operation's kind in lower case, like "start". */
export const kindName = (op: VmOperation) => lower(VmOperationKind[op.kind]);
/** Whether the operation has ended (succeeded, failed or cancelled). */
export const finished = (op: VmOperation) =>
  op.state === VmOperationState.SUCCEEDED ||
  op.state === VmOperationState.FAILED ||
  op.state === VmOperationState.CANCELLED;

/** One line saying how an operation ended (or where it is). */
function operationLine(op: VmOperation): string {
  const state = lower(VmOperationState[op.state]);
  const why =
    op.reason === "" ? "" : `: ${op.reason}${op.message === "" ? "" : ` (${op.message})`}`;
  return `${kindName(op)} ${op.vmId} on ${op.nodeId?.id ?? "-"}: ${state}${why}`;
}

/**
 * Prints an accepted operation and, unless `noWait`, follows it to its end
 * (progress on stderr like migrations; exit code 1 when it did not succeed).
 */
export async function followOperation(
  ctx: CliContext,
  accepted: VmOperation,
  noWait: boolean,
): Promise<void> {
  const client = ctx.client(VmService);
  ctx.err(
    `operation ${accepted.id}: ${kindName(accepted)} ${accepted.vmId} on ${accepted.nodeId?.id ?? "-"}\n`,
  );
  let final = accepted;
  if (!noWait && !finished(accepted)) {
    let told = false;
    const { last, outcome } = await watchProgress(ctx.io, {
      label: `operation ${accepted.id}`,
      open: (signal) => client.watchOperation({ operationId: accepted.id }, { signal }),
      progress: (op, say) => {
        if (!told && op.state === VmOperationState.PENDING) {
          told = true;
          void noteNodeDown(ctx, op, say);
        }
        return {
          phase: op.phase || lower(VmOperationState[op.state]),
          percent: op.percent,
        };
      },
      resumeHint: `hvctl vm operation ${accepted.id} --wait`,
      summary: (op) => (op === undefined ? "no state received" : lower(VmOperationState[op.state])),
    });
    if (outcome === "stopped") return;
    final = last ?? accepted;
  }
  ctx.print(messageJson(VmOperationSchema, final), () =>
    noWait ? `${final.id}\n` : `${operationLine(final)}\n`,
  );
  if (!noWait && final.state !== VmOperationState.SUCCEEDED) ctx.setExitCode(1);
}

/**
 * Says why an operation waits when its node is not ready: it is delivered
 * once the node's agent is back, which may be never. Silent when the node
 * cannot be read (a caller without node:read) or is ready.
 */
async function noteNodeDown(
  ctx: CliContext,
  op: VmOperation,
  say: (line: string) => void,
): Promise<void> {
  const node = op.nodeId?.id ?? "";
  if (node === "") return;
  try {
    const got = await ctx.client(NodeService).getNode({ id: { id: node } });
    if (got.summary?.readiness === NodeReadiness.READY) return;
    say(
      `note: ${node} is not ready: the operation waits until its agent is back (Ctrl-C stops watching; it stays queued). If ${node} is gone for good: hvctl node cordon ${node} --out-of-service\n`,
    );
  } catch {
    // Not allowed to read nodes, or not now: the progress says the rest.
  }
}
