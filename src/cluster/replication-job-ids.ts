/**
 * Replication job ids and tenants' spaces: a tenant's jobs are stored under
 * `<tenant's segment>:<id>`, shown to it without that prefix, and seen only
 * by a scope that may see that tenant. Pure functions, used by the
 * replication handlers, the watch and event services and tenancy.
 */
import { type CallScope, decodedTenant, encodedTenant } from "../core/index.js";

/**
 * A tenant's part of its jobs' stored ids: its name, as it always was, when
 * `<name>:<id>` is a valid store key (printable ASCII) and the name does not
 * start with '~'; else core `encodedTenant` ('~' and base64url), which such
 * a name cannot be. {@link tenantOfJobId} reads either back.
 */
function jobTenantSegment(tenant: string): string {
  return /^[\x21-\x7e]+$/.test(tenant) && !tenant.startsWith("~") ? tenant : encodedTenant(tenant);
}

/**
 * The stored id of a tenant's job: `<tenant's segment>:<id>`. A job id never
 * holds ':' (its pattern forbids it), so the last ':' ends the tenant's part
 * and no tenant can name an id in another's space.
 */
export function scopedJobId(tenant: string, jobId: string): string {
  return `${jobTenantSegment(tenant)}:${jobId}`;
}

/**
 * Whether a stored job id is in a scope's space: any for a cluster-wide
 * caller; for a confined one, an unscoped id or one of a tenant it may see.
 * A job planned in one tenant's space is not another's to see or stop when
 * its dataset changes hands (a VM given to another tenant): its id names
 * the tenant that planned it. A cluster admin deletes or keeps it.
 */
export function inSpace(jobId: string, scope: CallScope): boolean {
  if (scope.clusterWide) return true;
  const tenant = tenantOfJobId(jobId);
  return tenant === "" || scope.canSee(tenant);
}

/** The tenant whose space a stored job id is in ("" for an unscoped id). */
export function tenantOfJobId(jobId: string): string {
  const at = jobId.lastIndexOf(":");
  if (at <= 0) return "";
  const segment = jobId.slice(0, at);
  return decodedTenant(segment) ?? segment;
}

/** A stored job id as `tenant` knows it: its own prefix dropped. */
export function shownJobId(jobId: string, tenant: string | undefined): string {
  if (tenant === undefined) return jobId;
  const prefix = `${jobTenantSegment(tenant)}:`;
  return jobId.startsWith(prefix) ? jobId.slice(prefix.length) : jobId;
}
