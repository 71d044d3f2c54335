import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create, equals, fromBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import {
  createManualClock,
  handlerCall,
  preEncoded,
  type ServiceBinding,
  silentLogger,
} from "../core/index.js";
import {
  HealthSchema,
  type ListNodesRequest,
  ListNodesRequestSchema,
  NodeInfoSchema,
  type NodeList,
  NodeListSchema,
  NodeReadiness,
  type NodeSummary,
} from "../gen/debvisor/v1/node_pb.js";
import { createSqliteStore } from "../store/index.js";
import { createInventory } from "./inventory.js";
import { createNodeService } from "./node-service.js";

const TENANTS = ["acme", "globex"] as const;
const TTL_MS = 30_000;

/** The ListNodes handler as the transport calls it, for a caller in `tenant` (undefined: cluster-wide). */
const listNodesOf = (binding: ServiceBinding) =>
  handlerCall<object>(binding, "ListNodes") as (
    req: ListNodesRequest,
    tenant: string | undefined,
  ) => Promise<object>;

const labels = fc.record(
  { env: fc.constantFrom("prod", "dev"), tier: fc.constantFrom("a", "b") },
  { requiredKeys: [] },
);
const vm = fc.record({
  id: fc.constantFrom("vm-1", "vm-2", "vm-3", "vm-4"),
  tenant: fc.constantFrom("", ...TENANTS),
  vcpus: fc.nat(64),
  memoryBytes: fc.bigInt(0n, 1n << 40n),
});
const vms = fc.uniqueArray(vm, { selector: (v) => v.id, maxLength: 4 });
const node = fc.record({
  id: fc.stringMatching(/^[a-z][a-z0-9]{0,5}$/),
  zone: fc.constantFrom("", "z1", "z2"),
  rack: fc.constantFrom("", "r1", "r2"),
  labels,
  /** Undefined: never heard from. */
  vms: fc.option(vms, { nil: undefined }),
  cordoned: fc.boolean(),
});
/** What happens before a listing: time passes, one node's record changes, or nothing. */
const change = fc.oneof(
  fc.record({ kind: fc.constant("time" as const), ms: fc.nat(2 * TTL_MS) }),
  fc.record({ kind: fc.constant("beat" as const), index: fc.nat(), vms }),
  fc.record({ kind: fc.constant("cordon" as const), index: fc.nat(), cordoned: fc.boolean() }),
  fc.record({ kind: fc.constant("zone" as const), index: fc.nat(), zone: fc.constantFrom("z1") }),
  fc.constant({ kind: "none" as const }),
);
/** Mostly no filter, so that most listings have nodes to page through. */
const often = <T>(none: T, some: fc.Arbitrary<T>) =>
  fc.oneof({ arbitrary: fc.constant(none), weight: 3 }, { arbitrary: some, weight: 1 });
const listing = fc.record({
  change,
  tenant: often<string | undefined>(undefined, fc.constantFrom(...TENANTS)),
  pageSize: fc.nat(4),
  zone: often("", fc.constantFrom("z1", "z2")),
  rack: often("", fc.constant("r1")),
  readiness: often(
    NodeReadiness.UNSPECIFIED,
    fc.constantFrom(NodeReadiness.READY, NodeReadiness.NOT_READY),
  ),
  labelSelector: often({}, labels),
});

type Listing = typeof listing extends fc.Arbitrary<infer T> ? T : never;
type ReportedVm = typeof vm extends fc.Arbitrary<infer T> ? T : never;

/** The ids a listing must return, all pages together: the filters written out again. */
function expectedIds(all: readonly NodeSummary[], l: Listing): string[] {
  return all
    .filter(
      (n) =>
        (l.zone === "" || n.info?.zone === l.zone) &&
        (l.rack === "" || n.info?.rack === l.rack) &&
        (l.readiness === NodeReadiness.UNSPECIFIED || n.readiness === l.readiness) &&
        Object.entries(l.labelSelector).every(([k, v]) => n.info?.labels[k] === v),
    )
    .map((n) => n.info?.id?.id ?? "");
}

describe("ListNodes", () => {
  it("gives cluster-wide callers attached bytes that decode to exactly the answer, tenants none", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(node, { selector: (n) => n.id, maxLength: 7 }),
        fc.array(listing, { minLength: 1, maxLength: 8 }),
        async (nodes, listings) => {
          const clock = createManualClock(1_000_000);
          const store = createSqliteStore({
            path: join(mkdtempSync(join(tmpdir(), "dv-list-")), "state.db"),
            logger: silentLogger,
          });
          const inventory = createInventory({ store, clock, heartbeatTtlMs: TTL_MS });
          const listNodes = listNodesOf(createNodeService({ inventory }));
          let beatAt = 1n;
          const beat = async (id: string, reported: readonly ReportedVm[]) => {
            await inventory.heartbeat(
              create(HealthSchema, {
                nodeId: { id },
                cpuLoad: Number(beatAt) / 3,
                timestamp: { seconds: beatAt++ },
                vms: reported.map((v) => ({ ...v, nodeId: { id } })),
              }),
            );
            // Tenants are the control plane's: assign the ones the generated VMs name.
            await inventory.seedTenants(reported, "test");
          };
          const register = (n: (typeof nodes)[number], zone = n.zone) =>
            inventory.register(
              create(NodeInfoSchema, {
                id: { id: n.id },
                hostname: `${n.id}.example`,
                zone,
                rack: n.rack,
                labels: n.labels,
              }),
              "test",
            );
          try {
            for (const n of nodes) {
              await register(n);
              if (n.vms !== undefined) await beat(n.id, n.vms);
              if (n.cordoned) await inventory.cordon(n.id, true);
            }
            for (const l of listings) {
              const { change: c } = l;
              const target = "index" in c ? nodes[c.index % Math.max(1, nodes.length)] : undefined;
              if (c.kind === "time") clock.advance(c.ms);
              else if (target !== undefined && c.kind === "beat") await beat(target.id, c.vms);
              else if (target !== undefined && c.kind === "cordon")
                await inventory.cordon(target.id, c.cordoned);
              else if (target !== undefined && c.kind === "zone") await register(target, c.zone);

              const want = expectedIds(await inventory.listNodes(), l);
              const got: string[] = [];
              let pageToken = "";
              for (let page = 0; page <= nodes.length; page++) {
                // l.tenant is the caller's, not a tenant filter in the request.
                const request = create(ListNodesRequestSchema, { ...l, tenant: "", pageToken });
                const answer = await listNodes(request, l.tenant);
                const message: NodeList = create(NodeListSchema, answer as never);
                const bytes = preEncoded(answer, NodeListSchema);
                if (l.tenant === undefined) {
                  assert.ok(bytes !== undefined, "no bytes attached for a cluster-wide caller");
                  assert.ok(
                    equals(NodeListSchema, fromBinary(NodeListSchema, bytes), message),
                    "attached bytes decode to another message",
                  );
                } else {
                  assert.equal(bytes, undefined, "bytes attached for a tenant");
                  for (const n of message.nodes) {
                    for (const v of n.health?.vms ?? []) assert.equal(v.tenant, l.tenant);
                  }
                }
                got.push(...message.nodes.map((n) => n.info?.id?.id ?? ""));
                pageToken = message.nextPageToken;
                if (pageToken === "") break;
              }
              assert.equal(pageToken, "", "more pages than nodes");
              assert.deepEqual(got, want);
            }
          } finally {
            inventory.close();
            await store.close();
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});
