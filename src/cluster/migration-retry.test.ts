import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "../core/index.js";
import {
  type Migration,
  MigrationKind,
  MigrationSchema,
  MigrationState,
} from "../gen/debvisor/v1/migration_pb.js";
import { type MigrateSpec, RETRY_WINDOW_MS, retriedMigration } from "./migration-retry.js";

const NOW = 1_000_000_000;
const spec: MigrateSpec = { vmId: "vm-1", allowDowntime: false, requestedBy: "alice" };

function migration(fields: {
  id?: string;
  vm?: string;
  state?: MigrationState;
  target?: string;
  source?: string;
  by?: string;
  kind?: MigrationKind;
  allowDowntime?: boolean;
  finishedAgoMs?: number;
}): Migration {
  return create(MigrationSchema, {
    migrationId: fields.id ?? "m1",
    vm: { vmId: fields.vm ?? "vm-1" },
    source: { nodeId: { id: fields.source ?? "node-01" } },
    target: { nodeId: { id: fields.target ?? "node-02" } },
    state: fields.state ?? MigrationState.RUNNING,
    kind: fields.kind ?? MigrationKind.MIGRATE,
    requestedBy: fields.by ?? "alice",
    allowDowntime: fields.allowDowntime ?? false,
    finished:
      fields.finishedAgoMs === undefined ? undefined : timestampFromMs(NOW - fields.finishedAgoMs),
  });
}

describe("retriedMigration", () => {
  const cases: [string, Migration[], MigrateSpec, string | undefined][] = [
    ["ok-in-flight-attaches", [migration({})], spec, "m1"],
    ["ok-running-with-the-named-target", [migration({})], { ...spec, target: "NODE-02" }, "m1"],
    ["ok-pending", [migration({ state: MigrationState.PENDING })], spec, "m1"],
    [
      "ok-succeeded-just-now",
      [migration({ state: MigrationState.SUCCEEDED, finishedAgoMs: 1000 })],
      spec,
      "m1",
    ],
    [
      "ok-newest-of-the-vm-wins",
      [migration({ id: "other", vm: "vm-2" }), migration({ id: "m2" }), migration({ id: "m1" })],
      spec,
      "m2",
    ],
    ["fail-no-migration", [], spec, undefined],
    ["fail-other-vm", [migration({ vm: "vm-2" })], spec, undefined],
    ["fail-other-principal", [migration({ by: "bob" })], spec, undefined],
    ["fail-other-target", [migration({})], { ...spec, target: "node-03" }, undefined],
    ["fail-other-source", [migration({})], { ...spec, source: "node-09" }, undefined],
    ["fail-other-downtime-choice", [migration({ allowDowntime: true })], spec, undefined],
    ["fail-a-drain", [migration({ kind: MigrationKind.DRAIN })], spec, undefined],
    [
      "fail-failed-attempt-is-tried-again",
      [migration({ state: MigrationState.FAILED, finishedAgoMs: 1000 })],
      spec,
      undefined,
    ],
    [
      "fail-succeeded-too-long-ago",
      [migration({ state: MigrationState.SUCCEEDED, finishedAgoMs: RETRY_WINDOW_MS + 1 })],
      spec,
      undefined,
    ],
    [
      "fail-a-newer-migration-of-the-vm-by-someone-else",
      [migration({ id: "m2", by: "bob" }), migration({ id: "m1" })],
      spec,
      undefined,
    ],
  ];
  for (const [name, list, s, want] of cases) {
    it(name, () => {
      assert.equal(retriedMigration(list, s, NOW)?.migrationId, want);
    });
  }
});
