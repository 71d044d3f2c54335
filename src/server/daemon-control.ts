// What a running daemon is told after start-up: reload (SIGHUP) re-reads the
// configuration and TLS files, keeping the running ones when the new ones are
// wrong; shutdown (SIGTERM) drains calls, then unwinds the opened resources.

import type { OpenedResources } from "../core/index.js";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import type { Config } from "./config-schema.js";
import type { HealthState } from "./health-service.js";
import type { DaemonLogger } from "./logger.js";
import type { DaemonSecurity } from "./security-setup.js";
import type { DaemonPhase, DaemonServers } from "./servers-setup.js";
import type { SystemdNotifier } from "./systemd-notifier.js";
import type { TlsFiles } from "./tls-setup.js";

/** The daemon's mutable state, shared by start-up, the servers and {@link createDaemonControl}. */
export interface DaemonState {
  /** The running configuration; a successful reload replaces it. */
  config: Config;
  phase: DaemonPhase;
}

/** What {@link createDaemonControl} needs: the parts start-up opened. */
export interface DaemonControlSetup {
  readonly state: DaemonState;
  /** Read on each reload: `reloadConfig` re-reads configuration (absent: the running one). */
  readonly options: { readonly reloadConfig?: () => Config };
  readonly logger: DaemonLogger;
  readonly notifier: SystemdNotifier;
  readonly security: DaemonSecurity;
  readonly tlsFiles: TlsFiles;
  readonly servers: DaemonServers;
  readonly health: HealthState;
  readonly closing: AbortController;
  readonly resources: OpenedResources;
}

/** Reload and shutdown of a started daemon. */
export interface DaemonControl {
  /** Re-reads configuration and TLS files; keeps the running ones when the new ones are wrong. */
  reload(): Promise<boolean>;
  /** Drains calls in flight (up to shutdown.drainTimeoutMs) and stops. Idempotent. */
  shutdown(reason: string): Promise<void>;
}

/** Creates the reload and shutdown of a daemon whose parts have all started. */
export function createDaemonControl(setup: DaemonControlSetup): DaemonControl {
  const { state, options, logger, notifier, security, tlsFiles, servers, health } = setup;
  const { closing, resources } = setup;
  const { server, readiness } = servers;

  let stopping: Promise<void> | undefined;
  return {
    async reload() {
      await notifier.reloading();
      let ok = false;
      try {
        const next = options.reloadConfig?.() ?? state.config;
        const commitAccess = security.prepareReload(next);
        server.reloadTls(tlsFiles.load(next));
        security.revokedServers.refresh();
        commitAccess();
        logger.setLevel(next.log.level);
        for (const key of [
          "listen",
          "limits",
          "metrics",
          "log",
          "dev",
          "simulation",
          "cluster",
          "benchmark",
          "storage",
          "panel",
        ] as const) {
          if (key !== "log" && JSON.stringify(next[key]) !== JSON.stringify(state.config[key])) {
            logger.warn({ key }, "changed setting takes effect only after a restart");
          }
        }
        if (next.log.file !== state.config.log.file)
          logger.warn({ key: "log.file" }, "changed setting takes effect only after a restart");
        state.config = next;
        ok = true;
        logger.info({}, "configuration and TLS files reloaded");
      } catch (err) {
        logger.error({ err }, "reload failed; the running configuration is kept");
      }
      await notifier.ready(`serving on ${server.address}`);
      return ok;
    },
    shutdown(reason) {
      stopping ??= (async () => {
        state.phase = "stopping";
        readiness.close();
        health.setAll(ServingStatus.NOT_SERVING);
        closing.abort();
        logger.info({ reason, inFlight: server.inFlight() }, "shutting down: draining calls");
        await notifier.stopping();
        const { drained } = await servers.drain(state.config.shutdown.drainTimeoutMs);
        // Then everything else, newest first; the data directories are unlocked last.
        await resources.unwind();
        if (drained) logger.info({}, "stopped");
        else
          logger.warn(
            { drainTimeoutMs: state.config.shutdown.drainTimeoutMs },
            "stopped; calls still running at the deadline were cut off",
          );
        logger.flush();
      })();
      return stopping;
    },
  };
}
