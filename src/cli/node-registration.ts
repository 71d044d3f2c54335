import { type Command, Option } from "commander";
import { StatusCode } from "../gen/debvisor/v1/common_pb.js";
import { NodeService } from "../gen/debvisor/v1/node_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { parseBytes, parseLabels, parseWhole } from "./duration.js";
import { withExamples } from "./help-text.js";

/**
 * `hvctl node register|heartbeat`: putting a node in the inventory and
 * reporting its health by hand, as node and monitoring agents do.
 * Added to the node noun by node-command.ts.
 */
export function addRegistrationCommands(node: Command, cli: () => CliContext): void {
  withExamples(
    node
      .command("register")
      .description("add a node to the inventory, or update one you registered")
      .argument("<id>", "the node id: lower-case letters, digits, '.', '_' or '-'")
      .requiredOption("--hostname <name>", "its host name")
      .requiredOption("--ip <address>", "its IPv4 or IPv6 address")
      .option("--zone <zone>", "failure zone")
      .option("--rack <rack>", "rack")
      .option("--node-version <version>", "the node software's version")
      .option("--label <key=value...>", "labels, used by filters and placement")
      .option("--cpu-cores <n>", "cores it offers to VMs")
      .option("--memory <size>", "memory it offers to VMs, like 256GiB")
      .option("--storage <size>", "storage it offers to VMs, like 4TiB")
      .action(
        async (
          id: string,
          opts: {
            hostname: string;
            ip: string;
            zone?: string;
            rack?: string;
            nodeVersion?: string;
            label?: string[];
            cpuCores?: string;
            memory?: string;
            storage?: string;
          },
        ) => {
          const ctx = cli();
          const hasCapacity =
            opts.cpuCores !== undefined || opts.memory !== undefined || opts.storage !== undefined;
          const cores =
            opts.cpuCores === undefined
              ? 0
              : parseWhole("--cpu-cores", opts.cpuCores, 0, 1_000_000);
          const ack = await ctx.client(NodeService).registerNode({
            id: { id },
            hostname: opts.hostname,
            ip: opts.ip,
            zone: opts.zone ?? "",
            rack: opts.rack ?? "",
            version: opts.nodeVersion ?? "",
            labels: parseLabels("--label", opts.label),
            ...(hasCapacity
              ? {
                  capacity: {
                    cpuCores: cores,
                    memoryBytes:
                      opts.memory === undefined ? 0n : parseBytes("--memory", opts.memory),
                    storageBytes:
                      opts.storage === undefined ? 0n : parseBytes("--storage", opts.storage),
                  },
                }
              : {}),
          });
          ctx.print(
            { id, status: StatusCode[ack.status], message: ack.message },
            () => `node ${id} ${ack.message}\n`,
          );
        },
      ),
    "hvctl node register hv07 --hostname hv07.example --ip 10.0.0.7 --zone zone-b --cpu-cores 64 --memory 512GiB",
  );

  withExamples(
    node
      .command("heartbeat")
      .description(
        "report a node's health, as node and monitoring agents do; replaces its last report, VM list included",
      )
      .argument("<id>", "the node id")
      .addOption(
        new Option("--status <status>", "overall state")
          .choices(["ok", "warn", "error"])
          .default("ok"),
      )
      .option("--cpu-load <n>", "load average", "0")
      .option("--mem-used-pct <n>", "memory in use, percent", "0")
      .option("--disk-used-pct <n>", "disk in use, percent", "0")
      .option("--net-rtt-ms <n>", "network round trip, milliseconds", "0")
      .option("--ceph-status <text>", "Ceph health as the node sees it")
      .action(
        async (
          id: string,
          opts: {
            status: "ok" | "warn" | "error";
            cpuLoad: string;
            memUsedPct: string;
            diskUsedPct: string;
            netRttMs: string;
            cephStatus?: string;
          },
        ) => {
          const ctx = cli();
          const num = (flag: string, v: string) => {
            const n = Number(v);
            if (v.trim() === "" || !Number.isFinite(n))
              throw new UsageError(`${flag}: expected a number, got "${v}"`);
            return n;
          };
          const now = Date.now();
          const ack = await ctx.client(NodeService).heartbeat({
            nodeId: { id },
            overall: {
              ok: StatusCode.STATUS_OK,
              warn: StatusCode.STATUS_WARN,
              error: StatusCode.STATUS_ERROR,
            }[opts.status],
            cpuLoad: num("--cpu-load", opts.cpuLoad),
            memUsedPct: num("--mem-used-pct", opts.memUsedPct),
            diskUsedPct: num("--disk-used-pct", opts.diskUsedPct),
            netRttMs: num("--net-rtt-ms", opts.netRttMs),
            cephStatus: opts.cephStatus ?? "",
            timestamp: { seconds: BigInt(Math.floor(now / 1000)), nanos: (now % 1000) * 1e6 },
          });
          ctx.print(
            { id, status: StatusCode[ack.status], message: ack.message },
            () => `node ${id}: heartbeat ${ack.message}\n`,
          );
        },
      ),
    "hvctl node heartbeat hv07 --cpu-load 0.42 --mem-used-pct 61",
  );
}
