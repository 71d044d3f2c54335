import type { ServiceBinding } from "../core/index.js";
import type { StorageDriver } from "../drivers/index.js";
import type { ClusterRuntime } from "./cluster-runtime.js";
import type { Inventory } from "./inventory.js";
import { createMigrationService } from "./migration-service.js";
import { createNodeService } from "./node-service.js";
import { createStorageService } from "./storage-service.js";
import { createVmService } from "./vm-service.js";

/** Dependencies of the debvisor.v1 domain services. */
export interface DomainServiceDeps {
  readonly inventory: Inventory;
  readonly storage: StorageDriver;
  /** Migration, drain and failover; without it those answer NOT_IMPLEMENTED. */
  readonly runtime?: ClusterRuntime;
}

/** Every debvisor.v1 cluster service the daemon serves, bound to its handlers and permissions. */
export function createDomainServices(deps: DomainServiceDeps): ServiceBinding[] {
  return [
    createNodeService({ inventory: deps.inventory, engine: deps.runtime?.engine }),
    createVmService({ inventory: deps.inventory }),
    createMigrationService(deps.runtime),
    createStorageService({ storage: deps.storage, inventory: deps.inventory }),
  ];
}
