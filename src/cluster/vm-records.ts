import { create } from "@bufbuild/protobuf";
import { type Logger, silentLogger } from "../core/index.js";
import { type VmRecord, VmRecordSchema } from "../gen/debvisor/store/v1/records_pb.js";
import { type VmInfo, VmState } from "../gen/debvisor/v1/vm_pb.js";
import {
  type Compare,
  decodeMessage,
  encodeMessage,
  type KeyValue,
  type KvStore,
  mirrorPrefix,
  type PrefixMirror,
  type TxnOp,
} from "../store/index.js";
import { type ChangeLog, createChangeLog } from "./change-log.js";

const PREFIX = "vms/";

/** Lookup of VM records by id. */
export interface VmFacts {
  get(id: string): VersionedVm | undefined;
}

/** A VM record with the revision it was read at (0: no record). */
export interface VersionedVm {
  readonly rec: VmRecord;
  readonly rev: number;
}

/**
 * The control plane's facts about VMs (tenant, placement), under vms/<id>:
 * a watch-fed copy that shows this process's own writes at once, newest
 * revision wins.
 */
export interface VmRecords {
  /** Every record, by VM id (a view: lookups see later changes too). */
  all(): Promise<VmFacts>;
  /** Records that list a stale copy on `nodeId`, or any stale copy when omitted. */
  withStaleCopies(nodeId?: string): Promise<VersionedVm[]>;
  /** The records `matches` accepts, by id: one pass over every record. */
  where(matches: (rec: VmRecord) => boolean): Promise<VersionedVm[]>;
  /** Bumped whenever a record changes, for callers that cache what they derived. */
  version(): number;
  /**
   * When records last changed, by version: a cache built at a version at
   * least `knownFrom()` is still good for every VM whose `lastChange` is
   * not later (see change-log.ts).
   */
  readonly changes: Pick<ChangeLog, "knownFrom" | "lastChange">;
  /**
   * Calls `listener` after a record changes, with its VM id (undefined after
   * a reload: any may have changed), once the records are loaded.
   */
  onChange(listener: (id: string | undefined) => void): void;
  /** The compare and put that write `rec` only if the record is still at `rev`. */
  write(rec: VmRecord, rev: number): { compare: Compare; op: TxnOp };
  /** The compare and delete that remove VM `id`'s record only if it is still at `rev`. */
  drop(id: string, rev: number): { compare: Compare; op: TxnOp };
  /** The compare that holds only while VM `id`'s record is still at `rev` (0: still absent). */
  unchanged(id: string, rev: number): Compare;
  /** Notes a record this process wrote at `rev`. */
  remember(rec: VmRecord, rev: number): void;
  /** Notes a record this process deleted at `rev`. */
  forget(id: string, rev: number): void;
  close(): void;
}

/** Follows vms/ in `store`. */
export function createVmRecords(store: KvStore, logger: Logger = silentLogger): VmRecords {
  let mirror: Promise<PrefixMirror<VersionedVm>> | undefined;
  let loaded: PrefixMirror<VersionedVm> | undefined;
  const changes = createChangeLog();
  const listeners: ((id: string | undefined) => void)[] = [];
  /**
   * Ids whose current record lists stale copies, kept as each record changes:
   * heartbeats ask on every report, and a scan of every record per report
   * cost O(VMs) each while placements were being claimed.
   */
  const staleIds = new Set<string>();
  const decode = (kv: KeyValue): VersionedVm => ({
    rec: decodeMessage(VmRecordSchema, kv),
    rev: kv.modRevision,
  });
  const current = (id: string): VersionedVm | undefined => loaded?.values().get(id);
  const reindex = (id: string) => {
    if ((current(id)?.rec.staleCopies.length ?? 0) > 0) staleIds.add(id);
    else staleIds.delete(id);
  };
  function follow(): Promise<PrefixMirror<VersionedVm>> {
    if (mirror === undefined) {
      // The mirror shows this process's own writes at once (wrote), newest revision wins.
      const loading = mirrorPrefix(store, PREFIX, decode, logger, { revisionOf: (v) => v.rev });
      mirror = loading;
      loading.then(
        (m) => {
          loaded = m;
          for (const id of m.values().keys()) reindex(id);
          m.onChange((id) => {
            if (id !== undefined) {
              changes.note(id);
              reindex(id);
            } else {
              changes.reset();
              staleIds.clear();
              for (const k of m.values().keys()) reindex(k);
            }
            for (const listener of listeners) listener(id);
          });
        },
        () => {
          if (mirror === loading) mirror = undefined;
        },
      );
    }
    return mirror;
  }
  /** Notes a write of this process: at once when the copy is loaded, else once it is (reads wait for it too). */
  const wrote = (id: string, rev: number, value: VersionedVm | undefined) => {
    if (loaded !== undefined) loaded.wrote(id, rev, value);
    else
      follow().then(
        (m) => m.wrote(id, rev, value),
        () => undefined,
      );
  };
  return {
    async all() {
      await follow();
      return { get: current };
    },
    async withStaleCopies(nodeId) {
      await follow();
      const list: VersionedVm[] = [];
      for (const id of staleIds) {
        const v = current(id);
        if (
          v !== undefined &&
          (nodeId === undefined || v.rec.staleCopies.some((c) => c.nodeId === nodeId))
        )
          list.push(v);
      }
      return list;
    },
    async where(matches) {
      const m = await follow();
      const out: VersionedVm[] = [];
      for (const v of m.values().values()) if (matches(v.rec)) out.push(v);
      return out.sort((a, b) => (a.rec.id < b.rec.id ? -1 : a.rec.id > b.rec.id ? 1 : 0));
    },
    version: () => changes.version(),
    changes,
    onChange: (listener) => {
      listeners.push(listener);
    },
    unchanged: (id, rev) => ({ key: PREFIX + id, modRevision: rev }),
    drop: (id, rev) => ({
      compare: { key: PREFIX + id, modRevision: rev },
      op: { type: "delete", key: PREFIX + id },
    }),
    write(rec, rev) {
      const key = PREFIX + rec.id;
      return {
        compare: { key, modRevision: rev },
        op: { type: "put", key, value: encodeMessage(VmRecordSchema, rec) },
      };
    },
    remember: (rec, rev) => wrote(rec.id, rev, { rec, rev }),
    forget: (id, rev) => wrote(id, rev, undefined),
    close() {
      void mirror?.then((m) => m.close());
    },
  };
}

/** A new record for `id` from `prev` (or none) with `change` applied. */
export function vmRecord(
  id: string,
  prev: VersionedVm | undefined,
  change: Partial<Omit<VmRecord, "$typeName" | "$unknown" | "id">>,
): VmRecord {
  return create(VmRecordSchema, { ...(prev?.rec ?? { id }), id, ...change });
}

/**
 * Whether the control plane was asked for this VM not to run (a stop, or a
 * delete still waiting on its node): a managed VM whose desired state is
 * stopped. Nothing restarts such a VM (HA restore, failover, the placement
 * from the truth), whatever a node reports.
 */
export function askedToStop(rec: VmRecord | undefined): boolean {
  return rec?.managed === true && rec.desiredState === VmState.STOPPED;
}

/**
 * The VMs with the tenant, labels, managed flag and desired state the
 * control plane holds for each (none when it holds none), whatever the
 * report said: the same array when nothing differs. A VM with a spec is HA
 * only if both its spec and its node say so: the spec is the tenant's
 * choice, and the node fences only what it holds for HA (a report saying
 * HA, from a stolen node certificate or a domain's metadata edited by hand,
 * must not get a VM the node does not fence failed over or restarted).
 */
export function withTenants(vms: VmInfo[], records: VmFacts): VmInfo[] {
  const facts = (vm: VmInfo) => {
    const rec = records.get(vm.id)?.rec;
    return {
      tenant: rec?.tenant ?? "",
      labels: rec?.labels ?? {},
      managed: rec?.managed ?? false,
      desiredState: rec?.managed === true ? rec.desiredState : VmState.UNSPECIFIED,
      ha: vm.ha && rec?.spec?.ha !== false,
    };
  };
  const same = (vm: VmInfo, f: ReturnType<typeof facts>) =>
    vm.tenant === f.tenant &&
    sameLabels(vm.labels, f.labels) &&
    vm.managed === f.managed &&
    vm.desiredState === f.desiredState &&
    vm.ha === f.ha;
  if (vms.every((vm) => same(vm, facts(vm)))) return vms;
  return vms.map((vm) => {
    const f = facts(vm);
    return same(vm, f) ? vm : { ...vm, ...f, labels: { ...f.labels } };
  });
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return (
    ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && a[k] === b[k])
  );
}
