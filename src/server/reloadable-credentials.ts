import type { SecureServerOptions } from "node:http2";
import type { SecureContextOptions } from "node:tls";
import { ServerCredentials } from "@grpc/grpc-js";

/**
 * TLS server credentials whose certificate, key and client CA can be replaced
 * while serving: grpc-js hands new options to `setSecureContext`, so new
 * handshakes use them and open connections are untouched.
 */
export class ReloadableServerCredentials extends ServerCredentials {
  constructor(serverOptions: SecureServerOptions, context: SecureContextOptions) {
    super(serverOptions, context);
  }

  /** Swaps the TLS material for connections made from now on. */
  reload(context: SecureContextOptions): void {
    this.updateSecureContextOptions(context);
  }

  override _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}
