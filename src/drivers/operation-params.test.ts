import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { DatasetRefSchema, StorageBackend } from "../gen/debvisor/v1/storage_pb.js";
import { VmInfoSchema } from "../gen/debvisor/v1/vm_pb.js";
import {
  formatTransfer,
  parseTransfer,
  vmDefinitionParams,
  vmFromDefinitionParams,
} from "./operation-params.js";

describe("vmDefinitionParams", () => {
  const vm = create(VmInfoSchema, {
    id: "vm-007",
    name: "cache-007",
    tenant: "initech",
    vcpus: 2,
    memoryBytes: 2n * 1024n ** 3n,
    cpuModel: "host-model",
    ha: true,
    liveMigratable: true,
    disks: [
      { backend: StorageBackend.BACKEND_RBD, pool: "rbd", name: "vm-007-disk0" },
      { backend: StorageBackend.BACKEND_ZFS, pool: "tank", name: "vms/vm-007-disk1" },
    ],
  });

  it("ok-round-trip: the agent defines the vm the control plane described, without its tenant", () => {
    const back = vmFromDefinitionParams("vm-007", vmDefinitionParams(vm));
    assert.ok(back !== undefined);
    assert.deepEqual(
      { ...back, $typeName: undefined },
      { ...create(VmInfoSchema, { ...vm, tenant: "" }), $typeName: undefined },
    );
  });

  it("fail-no-definition: parameters without vcpus or memory describe nothing", () => {
    assert.equal(vmFromDefinitionParams("vm-007", { from: "node-03" }), undefined);
    assert.equal(vmFromDefinitionParams("vm-007", { vcpus: "2", memory_bytes: "lots" }), undefined);
    assert.equal(vmFromDefinitionParams("vm-007", { vcpus: "-1", memory_bytes: "1" }), undefined);
  });

  it("fits an operation's parameters: at most 32 entries, each value within 1024 characters", () => {
    const many = create(VmInfoSchema, {
      ...vm,
      disks: Array.from({ length: 64 }, (_, i) =>
        create(DatasetRefSchema, {
          backend: StorageBackend.BACKEND_RBD,
          pool: "rbd",
          name: `d${i}`,
        }),
      ),
    });
    const params = vmDefinitionParams(many);
    assert.ok(Object.keys(params).length + 1 <= 32, "room for from");
    for (const v of Object.values(params)) assert.ok(v.length <= 1024);
  });
});

describe("formatTransfer", () => {
  it("ok-round-trip: a migration's figures survive the progress message", () => {
    const p = {
      phase: "transferring" as const,
      percent: 40,
      bytesTransferred: 123n,
      bytesTotal: 456n,
      downtimeEstimateMs: 30,
    };
    assert.deepEqual(parseTransfer(formatTransfer(p)), {
      bytesTransferred: 123n,
      bytesTotal: 456n,
      downtimeEstimateMs: 30,
    });
  });

  it("fail-other-message: anything else reads as no figures", () => {
    assert.deepEqual(parseTransfer("started"), {
      bytesTransferred: 0n,
      bytesTotal: 0n,
      downtimeEstimateMs: 0,
    });
  });
});
