// The agent renews its own certificate, through the control plane its
// stream is on, once `renewAtFraction` of the certificate's life has passed.
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { agentFiles, type RevokedServers, renew } from "../client/index.js";
import { type Logger, runAfter, runAt } from "../core/index.js";
import type { AgentConfig } from "./agent-config.js";

/** The wait before a failed renewal, or an unreadable certificate, is tried again. */
const RETRY_MS = 60_000;

/**
 * Renews the certificate `renewAtFraction` into its life, through the server
 * the stream is on (`server()`, undefined while none is), and again each
 * time after. A failed try, or a certificate file that cannot be read, is
 * tried again a minute later; nothing it does throws. A server presenting a
 * certificate on `revokedServers` is refused, as the stream's is: the
 * renewal goes to `server()` when no stream is up too, and its answer
 * becomes the node's certificate. Returns the cancel.
 */
export function scheduleRenewal(
  config: Pick<AgentConfig, "dir" | "renewAtFraction" | "tlsServerName">,
  log: Logger,
  server: () => string | undefined,
  signal: AbortSignal,
  revokedServers?: RevokedServers,
): { cancel(): void } {
  const state = { cancel: () => {} };
  const later = (ms: number, then: () => void) => {
    state.cancel = runAfter(ms, then);
  };
  const attempt = () => {
    if (signal.aborted) return;
    const target = server();
    if (target === undefined) return later(RETRY_MS, attempt);
    renew({
      server: target,
      dir: config.dir,
      tlsServerName: config.tlsServerName,
      verifyServer: revokedServers?.guard(target).verify,
    }).then(
      (r) => {
        log.info({ serial: r.serial }, "certificate renewed");
        plan();
      },
      (err: unknown) => {
        log.warn({ err }, "certificate renewal failed; retrying in a minute");
        later(RETRY_MS, attempt);
      },
    );
  };
  const plan = () => {
    if (signal.aborted) return;
    let due: number;
    try {
      const cert = new X509Certificate(readFileSync(agentFiles(config.dir).cert));
      const from = Date.parse(cert.validFrom);
      const to = Date.parse(cert.validTo);
      due = Math.max(Date.now() + 1000, from + (to - from) * config.renewAtFraction);
    } catch (err) {
      log.warn({ err }, "certificate not readable; its renewal is planned again in a minute");
      return later(RETRY_MS, plan);
    }
    // A time by the clock, looked at again at each step: a host that booted with its clock
    // behind, set right since, renews by the right time (counted by timers, it waited on).
    state.cancel = runAt(due, Date.now, attempt);
  };
  plan();
  return state;
}
