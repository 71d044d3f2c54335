import { createHash } from "node:crypto";
import {
  type CallScope,
  principalOf,
  type Reason,
  RpcError,
  type Stage,
  type TargetKind,
  type TargetResolver,
} from "../core/index.js";
import {
  type AccessPolicy,
  accessOf,
  type Decision,
  decide,
  decideIn,
  policySlice,
  tenantsOf,
} from "./access-evaluator.js";
import { keepAuthorized } from "./stream-authorization.js";
import type { Subscribe } from "./stream-end.js";

/** Finds the tenants of each kind of target a method may declare (see TargetDecl). */
export type TargetResolvers = Partial<Record<TargetKind, TargetResolver>>;

/** How each kind of target answers when it is missing, or hidden from the caller. */
const NOT_FOUND: Partial<Record<TargetKind, Reason>> = {
  vm: "VM_NOT_FOUND",
  dataset: "DATASET_NOT_FOUND",
  migration: "MIGRATION_NOT_FOUND",
  "replication-job": "REPLICATION_JOB_NOT_FOUND",
  apikey: "APIKEY_NOT_FOUND",
  "vm-operation": "OPERATION_NOT_FOUND",
};

/**
 * The permission whose holder sees a target of each kind in its tenant's
 * lists, and so may be told it exists (PERMISSION_DENIED rather than its
 * NOT_FOUND). Any role in the tenant was taken as that: one that lists
 * nothing there (monitor, held cluster-wide) then told another tenant's VM
 * from a missing one.
 */
const SEES: Partial<Record<TargetKind, readonly string[]>> = {
  vm: ["vm:list"],
  dataset: ["storage:dataset:list"],
  migration: ["migration:list"],
  // ListDatasets shows each dataset's jobs.
  "replication-job": ["storage:replication:status", "storage:dataset:list"],
  apikey: ["auth:apikey:list"],
  "vm-operation": ["vm:list"],
};

/**
 * Default-deny authorization, decided once per call before the handler
 * (Kubernetes' RBAC authorizer is the model). The method's target
 * declaration says what the call touches; a resolver finds the target's
 * tenants, and only the caller's rules for those tenants (plus its
 * cluster-wide ones) decide. A target the caller may not see answers like a
 * missing one (its NOT_FOUND reason), unless the caller may list such
 * targets in the target's tenant and so sees it anyway (then PERMISSION_DENIED). The
 * handler gets `ctx.scope` (what else it may show) and `ctx.tenant` (the
 * tenant it acts in; undefined: cluster-wide). The deciding rule, or the
 * closest miss, goes to the log and the audit notes, never to the client.
 */
export function createAuthorizationStage(
  policy: () => AccessPolicy,
  resolvers: TargetResolvers = {},
  /** Tells of each change of the policy in force: a stream whose caller's access changed ends. */
  onPolicyChange?: Subscribe,
): Stage {
  return async (invocation, next) => {
    const { ctx, request } = invocation;
    if (ctx.method.access === "public") return next(invocation);
    const principal = principalOf(ctx);
    // Only the caller's part: what the call keeps (canSee, a stream's scope) holds no more.
    const p = policySlice(policy(), principal);
    const { permission, target } = ctx.method;
    const resource = ctx.method.resource?.(request) ?? {};
    const seen = new Map<string, boolean>();
    const canSee = (tenant: string): boolean => {
      let ok = seen.get(tenant);
      if (ok === undefined) {
        ok = decideIn(p, principal, permission, resource, tenant).allowed;
        seen.set(tenant, ok);
      }
      return ok;
    };
    const cluster = decideIn(p, principal, permission, resource, undefined);
    const refuse = (d: Decision, reason: Reason = "PERMISSION_DENIED"): never => {
      ctx.notes.decision = "deny";
      ctx.notes.reason = d.reason;
      ctx.log.warn({ permission, target: target.kind, rule: d.reason }, "permission denied");
      throw new RpcError(reason, { cause: new Error(d.reason) });
    };
    let acting: string | undefined;
    let decision: Decision = cluster;
    if (target.kind === "cluster") {
      if (!cluster.allowed) refuse(cluster);
    } else if (!cluster.allowed) {
      // Anything else: first, the permission held somewhere at all (tells nothing of the target).
      const gate = decide(p, principal, permission, resource);
      if (!gate.allowed) refuse(gate);
      decision = gate;
      acting = gate.tenant;
      if (target.kind === "tenant") {
        const stated = String(target.id?.(request) ?? "");
        const mine = tenantsOf(p, principal).filter(canSee);
        if (stated !== "") {
          if (!canSee(stated))
            refuse({
              ...gate,
              allowed: false,
              reason: `nothing in tenant ${stated} grants ${permission}`,
            });
          acting = stated;
        } else if (mine.length > 1) {
          throw new RpcError("INVALID_ARGUMENT", {
            message: `tenant: required: you act in several tenants (${mine.join(", ")})`,
          });
        }
      } else if (
        target.kind !== "any" &&
        !(target.optional && (target.id?.(request) ?? "") === "")
      ) {
        const reason = NOT_FOUND[target.kind] ?? "PERMISSION_DENIED";
        const resolve = resolvers[target.kind];
        const tenants =
          resolve === undefined
            ? undefined
            : await resolve(
                target.id?.(request),
                ctx.signal,
                tenantsOf(p, principal).filter(canSee),
              );
        const granted = (tenants ?? []).find((t) => t !== "" && canSee(t));
        if (granted === undefined) {
          // Told apart from missing only for a caller its tenant's lists show it to anyway.
          const sees = SEES[target.kind];
          const member =
            sees !== undefined &&
            (tenants ?? []).some((t) =>
              sees.some((see) => decideIn(p, principal, see, resource, t).allowed),
            );
          refuse(
            {
              ...gate,
              allowed: false,
              reason: `${target.kind} not visible with the rules of its tenant`,
            },
            member ? "PERMISSION_DENIED" : reason,
          );
        }
        acting = granted;
        decision = decideIn(p, principal, permission, resource, granted);
      }
    }
    let access: string | undefined;
    const scope: CallScope = Object.freeze({
      tenant: acting,
      clusterWide: cluster.allowed,
      canSee,
      // Worked out only when asked (a watch): most calls never need it.
      get access() {
        access ??= createHash("sha256").update(accessOf(p, principal)).digest("hex").slice(0, 12);
        return access;
      },
    });
    ctx.notes.decision = "allow";
    ctx.notes.reason = decision.reason;
    ctx.notes.tenant = acting;
    const result = await next({ ...invocation, ctx: { ...ctx, tenant: acting, scope } });
    return keepAuthorized(result, {
      ctx,
      policy,
      onPolicyChange,
      atStart: p,
      resource,
      scope: cluster.allowed ? undefined : acting,
    });
  };
}
