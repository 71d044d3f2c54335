import { RpcError, type Stage, withPrincipal } from "../core/index.js";

/**
 * Authenticates by client certificate only. The transport puts a certificate
 * in the context only after verifying it against the cluster CA, so an
 * unverified certificate (another CA, expired) never becomes an identity, and
 * nothing the client sends in metadata does either. Public methods (health)
 * pass without an identity. Every failure is the same UNAUTHENTICATED for the
 * client; the reason is logged.
 */
export function createMtlsAuthenticationStage(): Stage {
  return async (invocation, next) => {
    const { ctx } = invocation;
    if (ctx.method.access === "public") return next(invocation);
    const cert = ctx.peer.certificate;
    if (cert === undefined || cert.commonName === "") {
      const why = cert === undefined ? "no verified client certificate" : "certificate has no CN";
      ctx.log.warn({ peer: ctx.peer.address, why }, "authentication failed");
      throw new RpcError("UNAUTHENTICATED");
    }
    return next({
      ...invocation,
      ctx: withPrincipal(ctx, { id: cert.commonName, method: "mtls", roles: [] }),
    });
  };
}
