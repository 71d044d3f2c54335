import { defineService, notImplemented, RpcError, type ServiceBinding } from "../core/index.js";
import { MigrationService } from "../gen/debvisor/v1/migration_pb.js";

/**
 * MigrationService. Planning, migration and failover are not built yet and
 * answer UNIMPLEMENTED (NOT_IMPLEMENTED); the read methods are real and, with
 * no migration engine, there are no migrations to show.
 */
export function createMigrationService(): ServiceBinding {
  return defineService(
    MigrationService,
    {
      prepareMigration: { permission: "migration:plan", mutating: false },
      migrateVM: { permission: "migration:execute", mutating: true },
      failoverVM: { permission: "migration:failover", mutating: true },
      listMigrations: { permission: "migration:list", mutating: false },
      getMigration: { permission: "migration:list", mutating: false },
    },
    {
      prepareMigration: notImplemented,
      migrateVM: notImplemented,
      failoverVM: notImplemented,
      async listMigrations() {
        return { migrations: [], nextPageToken: "" };
      },
      async getMigration() {
        throw new RpcError("MIGRATION_NOT_FOUND");
      },
    },
  );
}
