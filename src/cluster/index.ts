// The cluster layer: the domain. Inventory of nodes and VMs, and the
// transport-neutral handlers of the debvisor.v1 services.

export type { DomainServiceDeps } from "./domain-services.js";
export { createDomainServices } from "./domain-services.js";
export type { Inventory, InventoryOptions, RegisterResult } from "./inventory.js";
export { createInventory } from "./inventory.js";
export { createMigrationService } from "./migration-service.js";
export type { NodeServiceDeps } from "./node-service.js";
export { createNodeService } from "./node-service.js";
export type { StorageServiceDeps } from "./storage-service.js";
export { createStorageService } from "./storage-service.js";
export { msFromTimestamp, timestampFromMs } from "./timestamp.js";
export type { VmServiceDeps } from "./vm-service.js";
export { createVmService } from "./vm-service.js";
