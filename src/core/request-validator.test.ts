import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, type DescMessage } from "@bufbuild/protobuf";
import {
  CreateApiKeyRequestSchema,
  RevokeApiKeyRequestSchema,
} from "../gen/debvisor/v1/access_pb.js";
import { VMMigrateSpecSchema } from "../gen/debvisor/v1/migration_pb.js";
import {
  HealthSchema,
  ListNodesRequestSchema,
  NodeInfoSchema,
} from "../gen/debvisor/v1/node_pb.js";
import { SnapshotRequestSchema, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { validateMessage } from "./request-validator.js";

const ds = { backend: StorageBackend.BACKEND_ZFS, pool: "tank", name: "vm-1-disk0" };
const cases: [string, DescMessage, object, string[]][] = [
  ["ok-empty-list-request", ListNodesRequestSchema, {}, []],
  [
    "ok-node",
    NodeInfoSchema,
    { id: { id: "node-01" }, hostname: "hv01.example", labels: { gpu: "a100" } },
    [],
  ],
  ["ok-node-hostname-with-capitals", NodeInfoSchema, { id: { id: "Node01.Example.COM" } }, []],
  [
    "ok-node-upper-case-uuid",
    NodeInfoSchema,
    { id: { id: "3F2504E0-4F89-11D3-9A0C-0305E82C3301" } },
    [],
  ],
  [
    "ok-node-dns-sized-id",
    NodeInfoSchema,
    { id: { id: `${"a".repeat(61)}.`.repeat(4).concat("b") } },
    [],
  ],
  ["fail-node-without-id", NodeInfoSchema, { hostname: "x" }, ["id: required"]],
  ["fail-node-empty-id", NodeInfoSchema, { id: { id: "" } }, ["id.id: required"]],
  [
    "fail-node-bad-id",
    NodeInfoSchema,
    { id: { id: "Node_01!" } },
    [
      "id.id: must be 1-253 letters, digits, '.', '_' or '-', starting and ending alphanumeric (a hostname or UUID)",
    ],
  ],
  [
    "fail-node-long-id",
    NodeInfoSchema,
    { id: { id: "a".repeat(254) } },
    ["id.id: at most 253 characters"],
  ],
  [
    "fail-label-key",
    NodeInfoSchema,
    { id: { id: "n1" }, labels: { "bad key": "v" } },
    ['labels["bad key"]: key does not match the key pattern'],
  ],
  [
    "fail-label-value",
    NodeInfoSchema,
    { id: { id: "n1" }, labels: { k: "v".repeat(257) } },
    ['labels["k"]: at most 256 characters'],
  ],
  [
    "fail-health-range",
    HealthSchema,
    { nodeId: { id: "n1" }, memUsedPct: 150 },
    ["mem_used_pct: must be between 0 and 100"],
  ],
  [
    "fail-health-vm-id",
    HealthSchema,
    { nodeId: { id: "n1" }, vms: [{ id: "vm-1" }, { id: "vm-2" }, { id: "VM 3" }] },
    [
      "vms[2].id: must be 1-63 lower-case letters, digits, '.', '_' or '-', starting and ending alphanumeric",
    ],
  ],
  [
    "fail-health-too-many-vms",
    HealthSchema,
    { nodeId: { id: "n1" }, vms: Array.from({ length: 1001 }, (_, i) => ({ id: `vm-${i}` })) },
    ["vms: at most 1000 entries"],
  ],
  [
    "fail-undefined-enum",
    ListNodesRequestSchema,
    { readiness: 99 },
    ["readiness: 99 is not a defined NodeReadiness value"],
  ],
  ["ok-snapshot-label-256", SnapshotRequestSchema, { dataset: ds, label: "l".repeat(256) }, []],
  [
    "fail-snapshot-label-257",
    SnapshotRequestSchema,
    { dataset: ds, label: "l".repeat(257) },
    ["label: at most 256 characters"],
  ],
  ["fail-snapshot-no-dataset", SnapshotRequestSchema, { label: "x" }, ["dataset: required"]],
  // No target: the planner picks one (target became optional with planning).
  ["ok-migrate-without-target", VMMigrateSpecSchema, { vm: { vmId: "vm-1" } }, []],
  [
    "fail-migrate-without-vm",
    VMMigrateSpecSchema,
    { target: { nodeId: { id: "n1" } } },
    ["vm: required"],
  ],
  [
    "fail-apikey-without-roles",
    CreateApiKeyRequestSchema,
    { principal: "ci" },
    ["roles: at least one entry required"],
  ],
  [
    "fail-revoke-bad-id",
    RevokeApiKeyRequestSchema,
    { id: "dvk_abc" },
    ["id: must be 16 hex digits"],
  ],
  [
    "fail-several",
    NodeInfoSchema,
    { id: { id: "" }, hostname: "bad host" },
    ["id.id: required", "hostname: must be a host name"],
  ],
];

describe("validateMessage (rules declared in the protos)", () => {
  for (const [name, schema, init, expected] of cases) {
    it(name, () => {
      const got = validateMessage(schema, create(schema, init as never)).map(
        (v) => `${v.field}: ${v.description}`,
      );
      assert.deepEqual(got, expected);
    });
  }
});
