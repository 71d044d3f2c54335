import { checkNumber, checkString, ID_HINT, ID_PATTERN, invalid } from "../core/index.js";
import type { Health, ListNodesRequest, NodeInfo } from "../gen/debvisor/v1/node_pb.js";
import type { VmInfo } from "../gen/debvisor/v1/vm_pb.js";

const MAX_LABELS = 64;
const MAX_VMS_PER_HEARTBEAT = 1000;
const LABEL_KEY = /^[a-zA-Z0-9]([a-zA-Z0-9._/-]{0,61}[a-zA-Z0-9])?$/;

/** Checks a RegisterNode request. */
export function validateNodeInfo(req: NodeInfo): void {
  checkString(req.id?.id ?? "", {
    field: "id.id",
    required: true,
    pattern: ID_PATTERN,
    patternHint: ID_HINT,
  });
  checkString(req.hostname, {
    field: "hostname",
    max: 253,
    pattern: /^[a-zA-Z0-9.-]+$/,
    patternHint: "a host name",
  });
  checkString(req.ip, {
    field: "ip",
    max: 45,
    pattern: /^[0-9a-fA-F:.]+$/,
    patternHint: "an IPv4 or IPv6 address",
  });
  checkString(req.rack, { field: "rack", max: 64 });
  checkString(req.zone, { field: "zone", max: 64 });
  checkString(req.version, { field: "version", max: 64 });
  checkLabels(req.labels, "labels");
}

/** Checks a Heartbeat request. */
export function validateHealth(req: Health): void {
  checkString(req.nodeId?.id ?? "", {
    field: "node_id.id",
    required: true,
    pattern: ID_PATTERN,
    patternHint: ID_HINT,
  });
  checkString(req.cephStatus, { field: "ceph_status", max: 64 });
  checkNumber(req.cpuLoad, "cpu_load", 0, 1e6);
  checkNumber(req.memUsedPct, "mem_used_pct", 0, 100);
  checkNumber(req.diskUsedPct, "disk_used_pct", 0, 100);
  checkNumber(req.netRttMs, "net_rtt_ms", 0, 3.6e6);
  if (req.vms.length > MAX_VMS_PER_HEARTBEAT)
    throw invalid(`vms: more than ${MAX_VMS_PER_HEARTBEAT}`);
  for (const [i, vm] of req.vms.entries()) validateVm(vm, `vms[${i}]`);
}

/** Checks a ListNodes request. */
export function validateListNodes(req: ListNodesRequest): void {
  checkString(req.zone, { field: "zone", max: 64 });
  checkString(req.rack, { field: "rack", max: 64 });
  checkLabels(req.labelSelector, "label_selector");
}

function validateVm(vm: VmInfo, field: string): void {
  checkString(vm.id, {
    field: `${field}.id`,
    required: true,
    pattern: ID_PATTERN,
    patternHint: ID_HINT,
  });
  checkString(vm.name, { field: `${field}.name`, max: 128 });
  checkString(vm.tenant, { field: `${field}.tenant`, max: 64 });
  checkString(vm.cpuModel, { field: `${field}.cpu_model`, max: 64 });
  if (vm.disks.length > 64) throw invalid(`${field}.disks: more than 64`);
}

function checkLabels(labels: Record<string, string>, field: string): void {
  const keys = Object.keys(labels);
  if (keys.length > MAX_LABELS) throw invalid(`${field}: more than ${MAX_LABELS} entries`);
  for (const k of keys) {
    checkString(k, {
      field: `${field} key`,
      max: 63,
      pattern: LABEL_KEY,
      patternHint: "a label key",
    });
    checkString(labels[k] ?? "", { field: `${field}[${k}]`, max: 256 });
  }
}
