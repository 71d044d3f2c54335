import { libvirtMigrationUriProblem } from "./libvirt-identifiers.js";
import { isSimUri } from "./sim-handoff.js";

/**
 * Why a node's reported migration URI may not be handed to a source node,
 * or undefined when it may: a simulated node's `sim://` directory (checked
 * again where it is used), or a libvirt URI that makes the source run no
 * program, use no other credentials and check no less.
 */
export function migrationUriProblem(uri: string): string | undefined {
  return isSimUri(uri) ? undefined : libvirtMigrationUriProblem(uri);
}
