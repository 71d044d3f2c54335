import { type MessageInitShape, toJson } from "@bufbuild/protobuf";
import { Command } from "commander";
import {
  type ListNodesRequestSchema,
  NodeListSchema,
  NodeReadiness,
  NodeService,
  type NodeSummary,
} from "../gen/debvisor/v1/node_pb.js";
import type { CliContext } from "./cli-context.js";
import { renderTable, shortAge } from "./output.js";

const READINESS: Record<string, NodeReadiness> = {
  ready: NodeReadiness.READY,
  "not-ready": NodeReadiness.NOT_READY,
};

/** `hvctl node ...`: nodes of the cluster. */
export function nodeCommand(cli: () => CliContext): Command {
  const node = new Command("node").description("nodes of the cluster");
  node
    .command("list")
    .description("list nodes with their last-known state")
    .option("--zone <zone>", "only nodes in this zone")
    .option("--rack <rack>", "only nodes in this rack")
    .option("-l, --selector <key=value...>", "only nodes with these labels")
    .option("--readiness <state>", "only ready or not-ready nodes")
    .action(
      async (opts: { zone?: string; rack?: string; selector?: string[]; readiness?: string }) => {
        const ctx = cli();
        const labelSelector: Record<string, string> = {};
        for (const s of opts.selector ?? []) {
          const at = s.indexOf("=");
          if (at <= 0) throw new Error(`--selector: expected key=value, got "${s}"`);
          labelSelector[s.slice(0, at)] = s.slice(at + 1);
        }
        let readiness = NodeReadiness.UNSPECIFIED;
        if (opts.readiness !== undefined) {
          const r = READINESS[opts.readiness];
          if (r === undefined)
            throw new Error(`--readiness: expected ready or not-ready, got "${opts.readiness}"`);
          readiness = r;
        }
        const client = ctx.client(NodeService);
        const nodes: NodeSummary[] = [];
        const req: MessageInitShape<typeof ListNodesRequestSchema> = {
          zone: opts.zone ?? "",
          rack: opts.rack ?? "",
          labelSelector,
          readiness,
          pageSize: 500,
        };
        let pageToken = "";
        do {
          const page = await client.listNodes({ ...req, pageToken }, { timeoutMs: ctx.timeoutMs });
          nodes.push(...page.nodes);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        if (ctx.format === "json") {
          ctx.out(
            `${JSON.stringify(toJson(NodeListSchema, { $typeName: "debvisor.v1.NodeList", nodes, nextPageToken: "" }), null, 2)}\n`,
          );
          return;
        }
        ctx.out(
          renderTable(
            ["ID", "HOSTNAME", "IP", "ZONE", "RACK", "STATUS", "LAST SEEN", "VMS", "CPU LOAD"],
            nodes.map((n) => [
              n.info?.id?.id ?? "",
              n.info?.hostname ?? "",
              n.info?.ip ?? "",
              n.info?.zone ?? "",
              n.info?.rack ?? "",
              (n.readiness === NodeReadiness.READY ? "Ready" : "NotReady") +
                (n.cordoned ? ",Cordoned" : ""),
              n.lastHeartbeat === undefined ? "never" : `${shortAge(Number(n.heartbeatAgeMs))} ago`,
              String(n.health?.vms.length ?? 0),
              n.health === undefined ? "-" : n.health.cpuLoad.toFixed(2),
            ]),
          ),
        );
      },
    );
  return node;
}
