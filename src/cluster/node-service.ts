import {
  type Clock,
  defineService,
  type LabelSelector,
  matchesLabels,
  paginate,
  parseLabelSelector,
  principalOf,
  RpcError,
  type ServiceBinding,
  scopeOf,
} from "../core/index.js";
import { StatusCode } from "../gen/debvisor/v1/common_pb.js";
import {
  type Health,
  type ListNodesRequest,
  type NodeInfo,
  NodeReadiness,
  NodeService,
  type NodeSummary,
} from "../gen/debvisor/v1/node_pb.js";
import type { AgentOperations } from "./agent-operations.js";
import type { AgentPresence } from "./agent-presence.js";
import { createAgentReportsGuard } from "./agent-reports-guard.js";
import type { EventSink } from "./event-recorder.js";
import type { Inventory } from "./inventory.js";
import type { MigrationEngine } from "./migration-engine.js";
import { drainNode } from "./node-drain.js";
import { attachNodeListEncoding, createSummaryEncoder } from "./node-list-encoding.js";
import { removeNode } from "./node-removal.js";
import { endLeftOperations } from "./operations-left.js";
import { filteredScope, scopeNode, visibleVms } from "./tenancy.js";
import { observedVm } from "./vm-view.js";

/** Dependencies of the NodeService handlers. */
export interface NodeServiceDeps {
  readonly inventory: Inventory;
  /** Drain moves VMs with it; without one, DrainNode is NOT_IMPLEMENTED. */
  readonly engine?: MigrationEngine;
  /** How long a NOT_READY node takes to fence itself: GetNode then shows its VMs stopped. */
  readonly fenceDelayMs?: number;
  /** Where cordons, drains and removals are told (default: nowhere). */
  readonly events?: EventSink;
  /** A removed node's operations still open are ended (default: left as they are). */
  readonly operations?: { readonly ops: AgentOperations; readonly clock: Clock };
  /**
   * Where nodes' agents are connected: while a node's agent is, RegisterNode
   * and Heartbeat for it are refused (AGENT_REPORTS_NODE). Absent: not asked.
   */
  readonly presence?: AgentPresence;
}

/** NodeService: registration, heartbeats and the node listing. */
export function createNodeService(deps: NodeServiceDeps): ServiceBinding {
  const { inventory } = deps;
  const tell = (id: string, type: string, message: string, warning = false) =>
    deps.events?.emit({
      kind: "node",
      id,
      tenant: "",
      type,
      message,
      warning,
      source: "node-service",
    });
  const refuseWhileAgentReports = createAgentReportsGuard(inventory, deps.presence);

  /** ListNodes answers cluster-wide callers with bytes built from each node's kept encoding. */
  const encoder = createSummaryEncoder();
  return defineService(
    NodeService,
    {
      registerNode: {
        permission: "node:register",
        mutating: true,
        resource: (req: NodeInfo) => ({ nodeId: req.id?.id ?? "" }),
        target: { kind: "cluster" },
      },
      heartbeat: {
        permission: "node:heartbeat",
        mutating: true,
        resource: (req: Health) => ({ nodeId: req.nodeId?.id ?? "" }),
        target: { kind: "cluster" },
      },
      listNodes: {
        permission: "node:list",
        mutating: false,
        validate: (req: ListNodesRequest) => parseLabelSelector(req.selector),
      },
      getNode: { permission: "node:list", mutating: false },
      // Node-wide operations act on every tenant's VMs: cluster-scoped.
      cordonNode: { permission: "node:cordon", mutating: true, target: { kind: "cluster" } },
      uncordonNode: { permission: "node:cordon", mutating: true, target: { kind: "cluster" } },
      drainNode: { permission: "node:drain", mutating: true, target: { kind: "cluster" } },
      removeNode: { permission: "node:remove", mutating: true, target: { kind: "cluster" } },
    },
    {
      async registerNode(req, ctx) {
        await refuseWhileAgentReports(req.id?.id ?? "", ctx);
        // Nodes are the cluster's: the cluster target keeps tenant-confined callers out.
        const { created } = await inventory.register(req, principalOf(ctx).id, ctx.signal);
        return { status: StatusCode.STATUS_OK, message: created ? "registered" : "updated" };
      },
      async heartbeat(req, ctx) {
        await refuseWhileAgentReports(req.nodeId?.id ?? "", ctx);
        // Only the node itself, or the identity that registered it, reports about it.
        const recorded = await inventory.heartbeat(req, ctx.signal, principalOf(ctx).id);
        return {
          status: recorded ? StatusCode.STATUS_OK : StatusCode.STATUS_WARN,
          message: recorded ? "recorded" : "older than the last heartbeat; ignored",
        };
      },
      async listNodes(req, ctx) {
        const scope = filteredScope(scopeOf(ctx), req.tenant);
        const selector = parseLabelSelector(req.selector);
        const all = await inventory.listNodes(ctx.signal);
        const nodes = all.filter((n) => nodeMatches(n, req, selector));
        const page = paginate(nodes, (n) => n.info?.id?.id ?? "", req.pageSize, req.pageToken);
        const list = {
          nodes: page.items.map((n) => scopeNode(n, scope)),
          nextPageToken: page.nextPageToken,
        };
        // A tenant's view leaves other tenants' VMs out: encoded as usual.
        if (!scope.clusterWide) return list;
        encoder.retain(all);
        return attachNodeListEncoding(list, encoder);
      },
      async getNode(req, ctx) {
        const found = await inventory.getNode(req.id?.id ?? "", ctx.signal);
        if (found === undefined) throw new RpcError("NODE_NOT_FOUND");
        return {
          summary: scopeNode(found.summary, scopeOf(ctx)),
          vms: visibleVms(found.vms, scopeOf(ctx)).map((vm) =>
            observedVm(vm, found.summary, deps.fenceDelayMs),
          ),
        };
      },
      async cordonNode(req, ctx) {
        const node = await inventory.cordon(req.id?.id ?? "", true, ctx.signal, req.outOfService);
        const id = node.info?.id?.id ?? "";
        const off = req.outOfService ? " (out of service: said to be off)" : "";
        tell(
          id,
          "Cordoned",
          `${id} cordoned${off} by ${principalOf(ctx).id}${req.reason === "" ? "" : `: ${req.reason}`}`,
        );
        return node;
      },
      async uncordonNode(req, ctx) {
        const node = await inventory.cordon(req.id?.id ?? "", false, ctx.signal);
        const id = node.info?.id?.id ?? "";
        tell(id, "Uncordoned", `${id} uncordoned by ${principalOf(ctx).id}`);
        return node;
      },
      async *drainNode(req, ctx) {
        if (deps.engine === undefined) throw new RpcError("NOT_IMPLEMENTED");
        const id = req.id?.id ?? "";
        for await (const p of drainNode(
          { inventory, engine: deps.engine },
          {
            nodeId: req.id?.id ?? "",
            maxParallel: req.maxParallel === 0 ? 2 : req.maxParallel,
            allowDowntime: req.allowDowntime,
            requestedBy: principalOf(ctx).id,
          },
          ctx.signal,
        )) {
          if (p.done) tell(id, p.failed > 0 ? "DrainFailed" : "Drained", p.message, p.failed > 0);
          else if (p.migration === undefined && p.message.startsWith("cordoned "))
            tell(id, "DrainStarted", p.message);
          yield p;
        }
      },
      async removeNode(req, ctx) {
        const node = await removeNode(inventory, req.id?.id ?? "", ctx.signal);
        const id = node.info?.id?.id ?? "";
        tell(id, "Removed", `${id} removed by ${principalOf(ctx).id}`);
        // Nobody will run them now: each would wait for good.
        if (deps.operations !== undefined)
          await endLeftOperations({
            operations: deps.operations.ops,
            nodeId: id,
            matches: () => true,
            message: `${id} was removed`,
            clock: deps.operations.clock,
            logger: ctx.log,
            signal: ctx.signal,
          });
        return node;
      },
    },
  );
}

/** Whether a node passes a ListNodes filter (`selector`: its `selector`, parsed). */
export function nodeMatches(
  node: NodeSummary,
  req: ListNodesRequest,
  selector: LabelSelector,
): boolean {
  const info = node.info;
  if (!matchesLabels(selector, info?.labels)) return false;
  if (req.zone !== "" && info?.zone !== req.zone) return false;
  if (req.rack !== "" && info?.rack !== req.rack) return false;
  if (req.readiness !== NodeReadiness.UNSPECIFIED && node.readiness !== req.readiness) return false;
  for (const [k, v] of Object.entries(req.labelSelector)) {
    if (info?.labels[k] !== v) return false;
  }
  return true;
}
