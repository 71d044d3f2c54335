/**
 * AgentService bound to its handlers and policy: the agents' streams
 * (Connect) and the transfers this process relays between agents.
 */
import { defineService, type ServiceBinding, type ServiceImpl } from "../core/index.js";
import { AgentService } from "../gen/debvisor/v1/agent_pb.js";
import { createTransferHandlers } from "./transfer-handlers.js";
import type { TransferRelay } from "./transfer-relay.js";

/** AgentService with `connect` serving the streams and `relay` the transfers. */
export function agentServiceBinding(
  connect: ServiceImpl<typeof AgentService>["connect"],
  relay: TransferRelay,
): ServiceBinding {
  return defineService(
    AgentService,
    {
      // Authorized on the certificate identity in the handler's Hello check (agent-stream-opener.ts).
      // Only cluster identities (nodes) hold streams: never a tenant-confined caller.
      connect: { permission: "node:connect", mutating: true, target: { kind: "cluster" } },
      // A transfer's ticket names the node whose certificate may present it (transfer-handlers.ts).
      uploadTransfer: {
        permission: "node:connect",
        mutating: true,
        target: { kind: "cluster" },
      },
      downloadTransfer: {
        permission: "node:connect",
        mutating: false,
        target: { kind: "cluster" },
      },
    },
    { connect, ...createTransferHandlers(relay) },
  );
}
