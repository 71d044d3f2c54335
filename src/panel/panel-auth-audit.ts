// The audit records of the panel's /auth/ endpoints: one `panel.auth` event
// per outcome, never with the password or any token.

import type { AuditFields } from "../audit/index.js";

/** Records one /auth/ outcome; the fields not given are empty. */
export type PanelAuthAudit = (
  f: Partial<AuditFields> & Pick<AuditFields, "method" | "code">,
) => Promise<void>;

/** Creates the recorder over `append` (undefined when audit is off: records nothing). */
export function createPanelAuthAudit(
  append: ((fields: AuditFields) => Promise<void>) | undefined,
): PanelAuthAudit {
  return async (f) => {
    await append?.({
      event: "panel.auth",
      requestId: "",
      principal: "",
      authMethod: "password",
      keyId: "",
      tenant: "",
      peer: "",
      service: "debvisor.panel.Auth",
      permission: "",
      decision: "",
      reason: "",
      args: "",
      error: "",
      durationMs: 0,
      ...f,
    });
  };
}
