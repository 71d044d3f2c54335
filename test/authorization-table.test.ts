import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, type DescService, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  agentFiles,
  createServiceClient,
  openChannel,
  type ResolvedContext,
  resolveContext,
} from "../src/client/index.js";
import { AccessService, file_debvisor_v1_access } from "../src/gen/debvisor/v1/access_pb.js";
import {
  AgentMessageSchema,
  AgentService,
  file_debvisor_v1_agent,
  TransferChunkSchema,
} from "../src/gen/debvisor/v1/agent_pb.js";
import { AuditService, file_debvisor_v1_audit } from "../src/gen/debvisor/v1/audit_pb.js";
import { EventService, file_debvisor_v1_event } from "../src/gen/debvisor/v1/event_pb.js";
import {
  file_debvisor_v1_migration,
  type Migration,
  MigrationService,
} from "../src/gen/debvisor/v1/migration_pb.js";
import { file_debvisor_v1_node, NodeService } from "../src/gen/debvisor/v1/node_pb.js";
import { EnrollmentService, file_debvisor_v1_pki } from "../src/gen/debvisor/v1/pki_pb.js";
import {
  type DatasetRef,
  file_debvisor_v1_storage,
  StorageBackend,
  StorageService,
} from "../src/gen/debvisor/v1/storage_pb.js";
import { file_debvisor_v1_vm, type VmInfo, VmService } from "../src/gen/debvisor/v1/vm_pb.js";
import { file_debvisor_v1_watch, WatchService } from "../src/gen/debvisor/v1/watch_pb.js";
import { createCsr } from "../src/pki/index.js";
import { type DaemonProcess, startDevDaemon } from "./helpers/daemon-process.js";
import { eventually } from "./helpers/eventually.js";

// The role x RPC x tenant table, written out by hand: every RPC of every
// debvisor.v1 service, called over TLS against a real dev daemon, by each
// kind of caller. Tenant T and U are the tenants of two VMs with ZFS disks
// (the simulation's seed decides which); "own" rows act on tenant T's
// resources, "other" rows on tenant U's.
//
// ok: authorization let the call through (whatever the handler then said:
//     requests are built to fail validation or harmlessly where acting
//     would disturb the other rows);
// PD: PERMISSION_DENIED; NF: NOT_FOUND, exactly as for a missing resource.

type Outcome = "ok" | "PD" | "NF";
const WHO = ["cluster", "tAdmin", "tOperator", "tViewer", "node", "otherNode", "multi"] as const;
type Who = (typeof WHO)[number];
type Expect = Record<Who, Outcome>;
/** Shorthand: outcomes in the order of WHO. */
const row = (...o: Outcome[]): Expect =>
  Object.fromEntries(WHO.map((w, i) => [w, o[i] as Outcome])) as Expect;

const SERVICES = {
  AgentService,
  NodeService,
  VmService,
  MigrationService,
  StorageService,
  AccessService,
  AuditService,
  EnrollmentService,
  EventService,
  WatchService,
} as const;
type ServiceName = keyof typeof SERVICES;

/** The world the rows refer to, found at start-up. */
interface World {
  T: string;
  U: string;
  vmT: VmInfo;
  vmU: VmInfo;
  diskT: DatasetRef;
  diskU: DatasetRef;
  rbdT: DatasetRef;
  rbdU: DatasetRef;
  migT: string;
  migU: string;
  /** A lifecycle operation in each tenant (a VM created in it). */
  opT: string;
  opU: string;
  jobT: string;
  jobU: string;
  keyT: () => Promise<string>;
  keyU: () => Promise<string>;
  ensureJobs: () => Promise<void>;
}

interface Row {
  readonly service: ServiceName;
  readonly method: string;
  /** Which variant (own or other tenant's target) when an RPC has two rows. */
  readonly variant?: string;
  readonly request: (w: World) => Promise<object> | object;
  readonly expect: Expect | ((w: World) => Expect);
}

const BAD_NODE = { id: "BAD NODE!" };
const now = () => ({ seconds: BigInt(Math.floor(Date.now() / 1000)) });

// cluster  tAdmin  tOperator  tViewer  node  otherNode  multi
// multi: viewer in T, operator in U (bindings only; a certificate of its own).
const ROWS: Row[] = [
  // NodeService: the node role only for its own node (node-01); tenants never.
  {
    service: "NodeService",
    method: "RegisterNode",
    request: () => ({ id: { id: "node-01" }, hostname: "bad host!" }),
    expect: row("ok", "PD", "PD", "PD", "ok", "PD", "PD"),
  },
  {
    service: "NodeService",
    method: "Heartbeat",
    request: () => ({ nodeId: { id: "node-01" }, timestamp: now(), cpuLoad: -1 }),
    expect: row("ok", "PD", "PD", "PD", "ok", "PD", "PD"),
  },
  {
    service: "NodeService",
    method: "ListNodes",
    request: () => ({}),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "NodeService",
    method: "GetNode",
    request: () => ({ id: { id: "node-01" } }),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "NodeService",
    method: "CordonNode",
    request: () => ({ id: BAD_NODE }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "NodeService",
    method: "RemoveNode",
    request: () => ({ id: BAD_NODE }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "NodeService",
    method: "UncordonNode",
    request: () => ({ id: BAD_NODE }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "NodeService",
    method: "DrainNode",
    request: () => ({ id: { id: "node-01" }, maxParallel: 99 }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  // VmService
  {
    service: "VmService",
    method: "ListVms",
    request: () => ({}),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "VmService",
    method: "GetVm",
    variant: "own",
    request: (w) => ({ vmId: w.vmT.id }),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "VmService",
    method: "GetVm",
    variant: "other",
    request: (w) => ({ vmId: w.vmU.id }),
    expect: row("ok", "NF", "NF", "NF", "PD", "PD", "ok"),
  },
  // Which tenant a VM belongs to is the cluster's to say: no tenant role, however
  // strong in its tenant, and no node may assign one (the request is a no-op:
  // the VM's own tenant again).
  {
    service: "VmService",
    method: "SetVmTenant",
    variant: "own",
    request: (w) => ({ vmId: w.vmT.id, tenant: w.T }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "VmService",
    method: "SetVmTenant",
    variant: "other",
    request: (w) => ({ vmId: w.vmU.id, tenant: w.U }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  // Labels: a VM's tenant may label it (vm:label, operators); a bad value fails validation after.
  {
    service: "VmService",
    method: "SetVmLabels",
    variant: "own",
    request: (w) => ({ vmId: w.vmT.id, set: { authz: "bad value!" } }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "VmService",
    method: "SetVmLabels",
    variant: "other",
    request: (w) => ({ vmId: w.vmU.id, set: { authz: "bad value!" } }),
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  // Watches: as their Lists; a tenant filter is for cluster-wide callers only.
  {
    service: "WatchService",
    method: "WatchNodes",
    request: () => ({}),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "WatchService",
    method: "WatchNodes",
    variant: "tenant filter",
    request: (w) => ({ list: { tenant: w.T } }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "WatchService",
    method: "WatchVms",
    request: () => ({}),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "WatchService",
    method: "WatchMigrations",
    request: () => ({}),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "WatchService",
    method: "WatchReplicationJobs",
    request: () => ({}),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "ok"),
  },
  // VM lifecycle: a creation in the tenant it names; the rest on an existing VM or
  // operation. Each request is invalid (refused by validation, after authorization).
  {
    service: "VmService",
    method: "CreateVm",
    variant: "own",
    request: (w) => ({ vmId: "x-new", spec: { vcpus: 0, memoryBytes: 1n }, tenant: w.T }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "VmService",
    method: "CreateVm",
    variant: "other",
    request: (w) => ({ vmId: "x-new", spec: { vcpus: 0, memoryBytes: 1n }, tenant: w.U }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "ok"),
  },
  ...(["StartVm", "StopVm", "RebootVm", "DeleteVm"] as const).flatMap((method): Row[] => [
    {
      service: "VmService",
      method,
      variant: "own",
      request: (w) => ({ vmId: w.vmT.id, requestId: "!bad" }),
      expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
    },
    {
      service: "VmService",
      method,
      variant: "other",
      request: (w) => ({ vmId: w.vmU.id, requestId: "!bad" }),
      expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
    },
  ]),
  // Which tenant a VM joins is the cluster's to say, as SetVmTenant.
  {
    service: "VmService",
    method: "AdoptVm",
    request: (w) => ({ vmId: w.vmT.id, tenant: "x".repeat(65) }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  ...(["GetOperation", "WatchOperation"] as const).flatMap((method): Row[] => [
    {
      service: "VmService",
      method,
      variant: "own",
      request: (w) => ({ operationId: w.opT }),
      expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
    },
    {
      service: "VmService",
      method,
      variant: "other",
      request: (w) => ({ operationId: w.opU }),
      expect: row("ok", "NF", "NF", "NF", "PD", "PD", "ok"),
    },
  ]),
  // MigrationService
  {
    service: "MigrationService",
    method: "PrepareMigration",
    variant: "own",
    request: (w) => ({ vm: { vmId: w.vmT.id } }),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "MigrationService",
    method: "PrepareMigration",
    variant: "other",
    request: (w) => ({ vm: { vmId: w.vmU.id } }),
    expect: row("ok", "NF", "NF", "NF", "PD", "PD", "ok"),
  },
  {
    service: "MigrationService",
    method: "MigrateVM",
    variant: "own",
    request: (w) => ({ vm: { vmId: w.vmT.id }, target: { nodeId: BAD_NODE } }),
    // multi is a viewer in T: it may see the VM, not move it.
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "MigrationService",
    method: "MigrateVM",
    variant: "other",
    request: (w) => ({ vm: { vmId: w.vmU.id }, target: { nodeId: BAD_NODE } }),
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  {
    service: "MigrationService",
    method: "FailoverVM",
    variant: "own",
    request: (w) => ({ vmId: w.vmT.id }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "MigrationService",
    method: "FailoverVM",
    variant: "other",
    request: (w) => ({ vmId: w.vmU.id }),
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  {
    service: "MigrationService",
    method: "ListMigrations",
    request: () => ({}),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "MigrationService",
    method: "GetMigration",
    variant: "own",
    request: (w) => ({ migrationId: w.migT }),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "MigrationService",
    method: "GetMigration",
    variant: "other",
    request: (w) => ({ migrationId: w.migU }),
    expect: row("ok", "NF", "NF", "NF", "PD", "PD", "ok"),
  },
  {
    service: "MigrationService",
    method: "StartMigration",
    variant: "own",
    request: (w) => ({ vm: { vmId: w.vmT.id }, target: { nodeId: BAD_NODE } }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "MigrationService",
    method: "StartMigration",
    variant: "other",
    request: (w) => ({ vm: { vmId: w.vmU.id }, target: { nodeId: BAD_NODE } }),
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  {
    service: "MigrationService",
    method: "WatchMigration",
    variant: "own",
    request: (w) => ({ migrationId: w.migT }),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "MigrationService",
    method: "WatchMigration",
    variant: "other",
    request: (w) => ({ migrationId: w.migU }),
    expect: row("ok", "NF", "NF", "NF", "PD", "PD", "ok"),
  },
  {
    service: "MigrationService",
    method: "CancelMigration",
    variant: "own",
    request: (w) => ({ migrationId: w.migT }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "MigrationService",
    method: "CancelMigration",
    variant: "other",
    request: (w) => ({ migrationId: w.migU }),
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  // StorageService
  {
    service: "StorageService",
    method: "CreateSnapshot",
    variant: "own",
    request: (w) => ({ dataset: w.diskT, label: "table" }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "StorageService",
    method: "CreateSnapshot",
    variant: "other",
    request: (w) => ({ dataset: w.diskU, label: "table" }),
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  {
    service: "StorageService",
    method: "PruneSnapshots",
    variant: "own",
    request: (w) => ({ dataset: w.diskT, policy: { keepLast: 100 }, dryRun: true }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "StorageService",
    method: "PruneSnapshots",
    variant: "other",
    request: (w) => ({ dataset: w.diskU, policy: { keepLast: 100 }, dryRun: true }),
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  {
    service: "StorageService",
    method: "PlanZfsReplication",
    variant: "own",
    request: (w) => ({ jobId: "BAD!", dataset: w.diskT }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "StorageService",
    method: "PlanZfsReplication",
    variant: "other",
    request: (w) => ({ jobId: "BAD!", dataset: w.diskU }),
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  {
    service: "StorageService",
    method: "RunZfsReplication",
    variant: "own",
    request: (w) => ({ jobId: w.jobT }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "StorageService",
    method: "RunZfsReplication",
    variant: "other",
    request: (w) => ({ jobId: w.jobU }),
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  {
    service: "StorageService",
    method: "GetReplicationStatus",
    variant: "own",
    request: (w) => ({ jobId: w.jobT }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "StorageService",
    method: "GetReplicationStatus",
    variant: "other",
    request: (w) => ({ jobId: w.jobU }),
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  {
    service: "StorageService",
    method: "CreateRbdTemplateSnapshot",
    request: (w) => ({ image: w.rbdT, label: "x".repeat(300) }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "StorageService",
    method: "CloneRbdFromTemplate",
    variant: "own",
    request: (w) => ({
      templateSnapshot: { dataset: w.rbdT, snapshotName: "tpl" },
      newImage: { backend: StorageBackend.BACKEND_RBD, pool: "rbd", name: "!bad" },
      tenant: w.T,
    }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "StorageService",
    method: "CloneRbdFromTemplate",
    variant: "other",
    request: (w) => ({
      templateSnapshot: { dataset: w.rbdT, snapshotName: "tpl" },
      newImage: { backend: StorageBackend.BACKEND_RBD, pool: "rbd", name: "!bad" },
      tenant: w.U,
    }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "ok"),
  },
  {
    service: "StorageService",
    method: "ListSnapshots",
    variant: "own",
    request: (w) => ({ dataset: w.diskT }),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "StorageService",
    method: "ListSnapshots",
    variant: "other",
    request: (w) => ({ dataset: w.diskU }),
    expect: row("ok", "NF", "NF", "NF", "PD", "PD", "ok"),
  },
  {
    service: "StorageService",
    method: "ListDatasets",
    request: () => ({}),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "StorageService",
    method: "ListReplicationJobs",
    request: () => ({}),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "ok"),
  },
  // Images: a VM's disk is never deleted (IMAGE_IN_USE) nor flattened (not a clone).
  {
    service: "StorageService",
    method: "ListImages",
    request: () => ({}),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "StorageService",
    method: "ListImages",
    variant: "tenant filter",
    request: (w) => ({ tenant: w.T }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "StorageService",
    method: "DeleteImage",
    variant: "own",
    request: (w) => ({ image: w.rbdT }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "StorageService",
    method: "DeleteImage",
    variant: "other",
    request: (w) => ({ image: w.rbdU }),
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  {
    service: "StorageService",
    method: "FlattenImage",
    variant: "own",
    request: (w) => ({ image: w.rbdT }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "StorageService",
    method: "FlattenImage",
    variant: "other",
    request: (w) => ({ image: w.rbdU }),
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  {
    service: "StorageService",
    method: "DeleteSnapshot",
    variant: "own",
    request: (w) => ({ snapshot: { dataset: w.diskT, snapshotName: "x".repeat(300) } }),
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "StorageService",
    method: "DeleteSnapshot",
    variant: "other",
    request: (w) => ({ snapshot: { dataset: w.diskU, snapshotName: "x".repeat(300) } }),
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  {
    service: "StorageService",
    method: "DeleteReplicationJob",
    variant: "own",
    request: async (w) => {
      await w.ensureJobs();
      return { jobId: w.jobT };
    },
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "StorageService",
    method: "DeleteReplicationJob",
    variant: "other",
    request: async (w) => {
      await w.ensureJobs();
      return { jobId: w.jobU };
    },
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  {
    service: "StorageService",
    method: "WatchReplication",
    variant: "own",
    request: async (w) => {
      await w.ensureJobs();
      return { jobId: w.jobT };
    },
    expect: row("ok", "ok", "ok", "PD", "PD", "PD", "PD"),
  },
  {
    service: "StorageService",
    method: "WatchReplication",
    variant: "other",
    request: async (w) => {
      await w.ensureJobs();
      return { jobId: w.jobU };
    },
    expect: row("ok", "NF", "NF", "PD", "PD", "PD", "ok"),
  },
  // AccessService: admin grants are cluster-wide for the dev admin, tenant T's for tAdmin.
  {
    service: "AccessService",
    method: "WhoAmI",
    request: () => ({}),
    expect: row("ok", "ok", "ok", "ok", "ok", "ok", "ok"),
  },
  {
    service: "AccessService",
    method: "CheckPermission",
    request: () => ({ permission: "vm:list" }),
    expect: row("ok", "ok", "ok", "ok", "ok", "ok", "ok"),
  },
  {
    service: "AccessService",
    method: "CreateApiKey",
    variant: "own",
    request: (w) => ({ principal: `${w.T}-new`, roles: ["viewer"], tenant: w.T }),
    expect: row("ok", "ok", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "AccessService",
    method: "CreateApiKey",
    variant: "other",
    request: (w) => ({ principal: `${w.U}-new`, roles: ["viewer"], tenant: w.U }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "AccessService",
    method: "ListApiKeys",
    request: () => ({}),
    expect: row("ok", "ok", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "AccessService",
    method: "RevokeApiKey",
    variant: "own",
    request: async (w) => ({ id: await w.keyT() }),
    expect: row("ok", "ok", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "AccessService",
    method: "RevokeApiKey",
    variant: "other",
    request: async (w) => ({ id: await w.keyU() }),
    expect: row("ok", "NF", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "AccessService",
    method: "RotateApiKey",
    variant: "own",
    request: async (w) => ({ id: await w.keyT() }),
    expect: row("ok", "ok", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "AccessService",
    method: "RotateApiKey",
    variant: "other",
    request: async (w) => ({ id: await w.keyU() }),
    expect: row("ok", "NF", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "AccessService",
    method: "ListRoles",
    request: () => ({}),
    expect: row("ok", "ok", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "AccessService",
    method: "ListBindings",
    request: () => ({}),
    expect: row("ok", "ok", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "AccessService",
    method: "SetBinding",
    variant: "own",
    request: (w) => ({ principal: `${w.T}-bound`, roles: ["viewer"], tenant: w.T }),
    expect: row("ok", "ok", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "AccessService",
    method: "SetBinding",
    variant: "other",
    request: (w) => ({ principal: `${w.U}-bound`, roles: ["viewer"], tenant: w.U }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "AccessService",
    method: "SetRole",
    request: () => ({ name: "BAD!", grants: ["vm:list"] }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  // AuditService: a tenant admin reads its tenant's records.
  {
    service: "AuditService",
    method: "ListAuditRecords",
    request: () => ({}),
    expect: row("ok", "ok", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "AuditService",
    method: "FollowAuditRecords",
    request: () => ({}),
    expect: row("ok", "ok", "PD", "PD", "PD", "PD", "PD"),
  },
  // EventService: viewer and up, anywhere; each caller sees its tenants' events only (events.test.ts).
  {
    service: "EventService",
    method: "ListEvents",
    request: () => ({}),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  {
    service: "EventService",
    method: "WatchEvents",
    request: () => ({}),
    expect: row("ok", "ok", "ok", "ok", "PD", "PD", "ok"),
  },
  // EnrollmentService: the cluster CA is cluster-scoped; Enroll is public (its token is the credential).
  {
    service: "EnrollmentService",
    method: "CreateEnrollmentToken",
    request: () => ({ nodeName: "BAD!" }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "EnrollmentService",
    method: "Enroll",
    request: () => ({ token: "", csrPem: "" }),
    expect: row("ok", "ok", "ok", "ok", "ok", "ok", "ok"),
  },
  {
    service: "EnrollmentService",
    method: "RenewCertificate",
    request: () => ({ csrPem: "" }),
    expect: row("ok", "ok", "ok", "ok", "ok", "ok", "ok"),
  },
  {
    service: "EnrollmentService",
    method: "RevokeCertificate",
    request: () => ({ serial: "not hex" }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "EnrollmentService",
    method: "ListCertificates",
    request: () => ({}),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "EnrollmentService",
    method: "IssueCertificate",
    request: () => ({ commonName: "!bad", usage: "client", csrPem: "x" }),
    expect: row("ok", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  // Not secret (any server certificate's serial is shown to whoever connects): every caller.
  {
    service: "EnrollmentService",
    method: "ListRevokedServerCertificates",
    request: () => ({}),
    expect: row("ok", "ok", "ok", "ok", "ok", "ok", "ok"),
  },
  // AgentService, last: an accepted stream replaces node-01's report with its Hello's.
  // Authorization keeps tenant callers out (a cluster target); then the hub takes a
  // stream only from the certificate of the node its Hello names, so the cluster
  // admin (CN admin) and node-02 are refused there (PD) and only node-01 gets in.
  {
    service: "AgentService",
    method: "Connect",
    request: () => ({ hello: "node-01" }),
    expect: row("PD", "PD", "PD", "PD", "ok", "PD", "PD"),
  },
  // A transfer needs node:connect and then a ticket issued to the caller's node:
  // a made-up one is refused to everyone, the node included.
  {
    service: "AgentService",
    method: "UploadTransfer",
    request: () => ({ ticket: "made-up-ticket" }),
    expect: row("PD", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
  {
    service: "AgentService",
    method: "DownloadTransfer",
    request: () => ({ ticket: "made-up-ticket" }),
    expect: row("PD", "PD", "PD", "PD", "PD", "PD", "PD"),
  },
];

/** Whether `method` follows something as a stream and changes nothing (WatchEvents; not DrainNode). */
function isReadingStream(service: ServiceName, method: string): boolean {
  const desc = (SERVICES[service] as unknown as DescService).methods.find((m) => m.name === method);
  return desc?.methodKind === "server_streaming" && /^(Watch|Follow)/.test(method);
}

/** Codes that mean "authorization let it through". Anything else is a finding. */
function outcomeOf(code: grpc.status | undefined): Outcome | string {
  if (code === undefined) return "ok";
  if (code === grpc.status.PERMISSION_DENIED) return "PD";
  if (code === grpc.status.NOT_FOUND) return "NF";
  if (
    [
      grpc.status.UNAUTHENTICATED,
      grpc.status.RESOURCE_EXHAUSTED,
      grpc.status.UNIMPLEMENTED,
      grpc.status.INTERNAL,
      grpc.status.UNAVAILABLE,
    ].includes(code)
  )
    return grpc.status[code] ?? String(code);
  return "ok";
}

describe("every RPC x every kind of caller, over TLS against a dev daemon", () => {
  let daemon: DaemonProcess;
  let dir: string;
  let admin: ResolvedContext;
  const channels: grpc.Client[] = [];
  const ctxs = {} as Record<Who, ResolvedContext>;
  let world: World;
  const open = (ctx: ResolvedContext) => {
    const ch = openChannel(ctx);
    channels.push(ch);
    return ch;
  };
  const clients = new Map<string, Record<string, (...a: unknown[]) => unknown>>();
  const client = (who: Who, service: ServiceName) => {
    const key = `${who}/${service}`;
    let c = clients.get(key);
    if (c === undefined) {
      const ch = open(ctxs[who]);
      c = createServiceClient(SERVICES[service], ch) as never;
      clients.set(key, c as never);
    }
    return c as Record<string, (...a: unknown[]) => unknown>;
  };
  /** One call; the code it ended with (undefined: OK). Streams: the first message or end. */
  const call = async (who: Who, service: ServiceName, method: string, request: object) => {
    const desc = (SERVICES[service] as unknown as DescService).methods.find(
      (m) => m.name === method,
    );
    assert.ok(desc, `${service}/${method} exists`);
    const fn = client(who, service)[desc.localName] as (r: object, o: object) => unknown;
    if (desc.methodKind === "bidi_streaming")
      return desc.name === "Connect"
        ? connect(who, request as { hello: string })
        : upload(who, request as { ticket: string });
    try {
      if (desc.methodKind === "server_streaming") {
        // A stream with nothing to send yet is stopped here and counts as allowed; so a refusal
        // must arrive first. 5 s, as a unary call's deadline: the call may also have to connect
        // (TLS), and 1.5 s was thin on a loaded machine (a late refusal read as allowed).
        const stop = new AbortController();
        const timer = setTimeout(() => stop.abort(), 5000);
        try {
          for await (const _ of fn(request, { signal: stop.signal }) as AsyncIterable<unknown>)
            break;
        } finally {
          clearTimeout(timer);
          stop.abort();
        }
      } else await fn(request, { timeoutMs: 5000 });
      return undefined;
    } catch (err) {
      const code = (err as grpc.ServiceError).code;
      // A stream we stopped ourselves, or a call the handler was still working on: authorization passed.
      if (code === grpc.status.CANCELLED || code === grpc.status.DEADLINE_EXCEEDED)
        return undefined;
      return code;
    }
  };

  /** An agent stream: a Hello for the named node, then its first answer (Welcome) or its error. */
  const connect = (who: Who, req: { hello: string }) =>
    new Promise<grpc.status | undefined>((resolve) => {
      const ch = open(ctxs[who]);
      const stream = ch.makeBidiStreamRequest(
        "/debvisor.v1.AgentService/Connect",
        (b: Uint8Array) => Buffer.from(b),
        (b: Buffer) => b,
        new grpc.Metadata(),
        { deadline: Date.now() + 5000 },
      );
      const done = (code: grpc.status | undefined) => {
        stream.removeAllListeners();
        stream.on("error", () => {});
        stream.cancel();
        resolve(code);
      };
      stream.on("data", () => done(undefined));
      stream.on("error", (e: grpc.ServiceError) => done(e.code));
      stream.write(
        toBinary(
          AgentMessageSchema,
          create(AgentMessageSchema, {
            kind: {
              case: "hello",
              value: {
                info: { id: { id: req.hello }, hostname: `${req.hello}.example` },
                agentVersion: "authz-table",
                health: { nodeId: { id: req.hello }, timestamp: now() },
              },
            },
          }),
        ),
      );
    });

  /** An upload: its first message (the ticket), then the code it ended with. */
  const upload = (who: Who, req: { ticket: string }) =>
    new Promise<grpc.status | undefined>((resolve) => {
      const stream = open(ctxs[who]).makeBidiStreamRequest(
        "/debvisor.v1.AgentService/UploadTransfer",
        (b: Uint8Array) => Buffer.from(b),
        (b: Buffer) => b,
        new grpc.Metadata(),
        { deadline: Date.now() + 5000 },
      );
      stream.on("data", () => {});
      stream.on("end", () => resolve(undefined));
      stream.on("error", (e: grpc.ServiceError) =>
        resolve(e.code === grpc.status.DEADLINE_EXCEEDED ? undefined : e.code),
      );
      stream.write(toBinary(TransferChunkSchema, create(TransferChunkSchema, req)));
      stream.end();
    });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "dv-authz-table-"));
    daemon = await startDevDaemon(dir, {
      rateLimit: {
        perSource: { ratePerSecond: 100_000, burst: 100_000 },
        perPrincipal: { ratePerSecond: 100_000, burst: 100_000 },
      },
    });
    admin = resolveContext(join(dir, "hvctl.yaml"), "dev");
    ctxs.cluster = admin;
    const asAdmin = <S extends ServiceName>(s: S) =>
      createServiceClient(SERVICES[s], open(admin)) as unknown as ReturnType<
        typeof createServiceClient<(typeof SERVICES)[S]>
      >;
    const access = asAdmin("AccessService");
    const vms = (await asAdmin("VmService").listVms({ pageSize: 1000 })).vms;
    const zfs = vms.filter((v) => v.disks[0]?.backend === StorageBackend.BACKEND_ZFS);
    const vmT = zfs[0] as VmInfo;
    const vmU = zfs.find((v) => v.tenant !== vmT.tenant) as VmInfo;
    assert.ok(vmT && vmU, "the simulation has ZFS VMs of two tenants");
    const T = vmT.tenant;
    const U = vmU.tenant;
    const rbd = vms.find(
      (v) => v.tenant === T && v.disks[0]?.backend === StorageBackend.BACKEND_RBD,
    ) as VmInfo;
    assert.ok(rbd, "tenant T has an RBD image");
    const rbdU = vms.find(
      (v) => v.tenant === U && v.disks[0]?.backend === StorageBackend.BACKEND_RBD,
    ) as VmInfo;
    assert.ok(rbdU, "tenant U has an RBD image");
    // Tenant principals: API keys confined to T; their roles come from bindings in T too.
    await access.setBinding({ principal: "t-admin", roles: ["admin", "operator"], tenant: T });
    const key = async (principal: string, roles: string[]) =>
      (await access.createApiKey({ principal, roles, tenant: T })).token;
    const bearer = (token: string): ResolvedContext => ({
      ...admin,
      certPem: undefined,
      keyPem: undefined,
      bearer: token,
    });
    ctxs.tAdmin = bearer(await key("t-admin", ["viewer"]));
    ctxs.tOperator = bearer(await key("t-operator", ["operator"]));
    ctxs.tViewer = bearer(await key("t-viewer", ["viewer"]));
    // Nodes: the simulated nodes' own certificates, enrolled by the dev daemon.
    const nodeCtx = (id: string): ResolvedContext => {
      const f = agentFiles(join(dir, "nodes", id));
      return {
        ...admin,
        certPem: readFileSync(f.cert, "utf8"),
        keyPem: readFileSync(f.key, "utf8"),
      };
    };
    ctxs.node = nodeCtx("node-01");
    ctxs.otherNode = nodeCtx("node-02");
    // Several bindings: viewer in T, operator in U, with a certificate that carries no roles.
    await access.setBinding({ principal: "multi", roles: ["viewer"], tenant: T });
    await access.setBinding({ principal: "multi", roles: ["operator"], tenant: U });
    const csr = await createCsr("multi");
    const cert = await asAdmin("EnrollmentService").issueCertificate({
      commonName: "multi",
      usage: "client",
      csrPem: csr.csrPem,
    });
    ctxs.multi = { ...admin, certPem: cert.certificatePem, keyPem: csr.keyPem };
    // A finished migration in each tenant.
    const migrations = asAdmin("MigrationService");
    const migrate = async (vm: VmInfo) => {
      const started = await migrations.startMigration({ vm: { vmId: vm.id }, allowDowntime: true });
      await eventually(
        async () => {
          const m: Migration = await migrations.getMigration({ migrationId: started.migrationId });
          assert.ok(m.finished !== undefined, "migration did not finish");
        },
        { timeoutMs: 30_000 },
      );
      return started.migrationId;
    };
    // RBD VMs move (their disks are shared); ZFS ones would need a replica.
    const movable = (tenant: string) =>
      vms.find(
        (v) => v.tenant === tenant && v.disks[0]?.backend === StorageBackend.BACKEND_RBD,
      ) as VmInfo;
    const migT = await migrate(movable(T));
    const migU = await migrate(movable(U));
    const createIn = async (tenant: string, vmId: string) =>
      (
        await asAdmin("VmService").createVm({
          vmId,
          spec: { vcpus: 1, memoryBytes: 1024n ** 3n },
          tenant,
        })
      ).id;
    const opT = await createIn(T, "table-t");
    const opU = await createIn(U, "table-u");
    const storage = asAdmin("StorageService");
    const nodeOf = async (id: string) =>
      (await asAdmin("VmService").getVm({ vmId: id })).nodeId?.id ?? "";
    const other = async (node: string) => (node === "node-01" ? "node-02" : "node-01");
    const plans = {
      jobT: { jobId: "table-t", dataset: vmT.disks[0], source: "", target: "" },
      jobU: { jobId: "table-u", dataset: vmU.disks[0], source: "", target: "" },
    };
    for (const [p, vm] of [
      [plans.jobT, vmT],
      [plans.jobU, vmU],
    ] as const) {
      p.source = await nodeOf(vm.id);
      p.target = await other(p.source);
    }
    // The dev daemon may already replicate a dataset to that node: then that job is the one.
    const ensureJobs = async () => {
      const existing = (await storage.listReplicationJobs({ pageSize: 1000 })).jobs;
      for (const k of ["jobT", "jobU"] as const) {
        const p = plans[k];
        const found = existing.find(
          (j) =>
            j.plan?.dataset?.name === p.dataset?.name &&
            j.plan?.dataset?.pool === p.dataset?.pool &&
            j.plan?.target?.nodeId?.id === p.target,
        );
        if (found !== undefined) {
          world[k] = found.jobId;
          continue;
        }
        await storage.planZfsReplication({
          jobId: p.jobId,
          dataset: p.dataset,
          source: { nodeId: { id: p.source } },
          target: { nodeId: { id: p.target } },
        });
        world[k] = p.jobId;
      }
    };
    world = {
      T,
      U,
      vmT,
      vmU,
      diskT: vmT.disks[0] as DatasetRef,
      diskU: vmU.disks[0] as DatasetRef,
      rbdT: rbd.disks[0] as DatasetRef,
      rbdU: rbdU.disks[0] as DatasetRef,
      migT,
      migU,
      opT,
      opU,
      jobT: "",
      jobU: "",
      keyT: async () =>
        (await access.createApiKey({ principal: "t-throwaway", roles: ["viewer"], tenant: T })).key
          ?.id ?? "",
      keyU: async () =>
        (await access.createApiKey({ principal: "u-throwaway", roles: ["viewer"], tenant: U })).key
          ?.id ?? "",
      ensureJobs,
    };
    await ensureJobs();
  });
  after(() => {
    for (const ch of channels) ch.close();
    daemon?.kill();
  });

  it("has a row for every RPC of every debvisor.v1 service in the protos", () => {
    const files = [
      file_debvisor_v1_node,
      file_debvisor_v1_vm,
      file_debvisor_v1_migration,
      file_debvisor_v1_storage,
      file_debvisor_v1_access,
      file_debvisor_v1_audit,
      file_debvisor_v1_pki,
      file_debvisor_v1_agent,
      file_debvisor_v1_event,
      file_debvisor_v1_watch,
    ];
    const rpcs = files.flatMap((f) => f.services.flatMap((s) => s.methods.map((m) => m.name)));
    assert.equal(rpcs.length, 72);
    assert.deepEqual(
      rpcs.filter((name) => !ROWS.some((r) => r.method === name)),
      [],
      "RPCs without a row",
    );
  });

  for (const r of ROWS) {
    const name = `${r.service.replace("Service", "")}/${r.method}${r.variant ? ` (${r.variant} tenant's)` : ""}`;
    it(name, async () => {
      const expect = typeof r.expect === "function" ? r.expect(world) : r.expect;
      const got: Record<string, string> = {};
      const one = async (who: Who) => {
        got[who] = String(outcomeOf(await call(who, r.service, r.method, await r.request(world))));
      };
      // An allowed stream with nothing to send counts only after its 5 s wait: for a stream that
      // only reads, the callers wait side by side. Other rows stay one caller at a time.
      if (isReadingStream(r.service, r.method)) await Promise.all(WHO.map(one));
      else for (const who of WHO) await one(who);
      assert.deepEqual(got, expect);
    });
  }
});
