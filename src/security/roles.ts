/** A role: a name and the grants it holds. */
export interface Role {
  readonly name: string;
  readonly grants: readonly string[];
  readonly builtIn: boolean;
}

/**
 * The built-in roles. operator, developer, monitor and viewer are the
 * original design's, widened only by the read permissions of methods added
 * since (vm:list, migration:list, event:list, event:watch). admin is security administration; node is
 * what an agent on a hypervisor needs, and only for its own node.
 */
export const BUILT_IN_ROLES: readonly Role[] = Object.freeze(
  [
    { name: "operator", grants: ["node:*", "vm:*", "migration:*", "storage:*", "event:*"] },
    {
      name: "developer",
      grants: [
        "node:list",
        "vm:list",
        "storage:snapshot:create",
        "storage:snapshot:list",
        "storage:dataset:list",
        "storage:clone:*",
        "event:list",
        "event:watch",
      ],
    },
    { name: "monitor", grants: ["node:list", "node:heartbeat"] },
    {
      name: "viewer",
      grants: [
        "node:list",
        "vm:list",
        "storage:snapshot:list",
        "storage:dataset:list",
        "migration:plan",
        "migration:list",
        "event:list",
        "event:watch",
      ],
    },
    { name: "admin", grants: ["auth:*", "pki:*", "audit:*"] },
    { name: "node", grants: ["node:register", "node:heartbeat", "node:connect"] },
  ].map((r) => Object.freeze({ ...r, grants: Object.freeze(r.grants), builtIn: true })),
);

/** Roles whose grants hold only for the principal's own node (the node id equals the principal id). */
export const SELF_ONLY_ROLES: ReadonlySet<string> = new Set(["node"]);
