import type { AuditRecordInfo } from "../../src/gen/debvisor/v1/audit_pb.js";
import { api, authGet, authPost, describe, follow } from "./api.js";
import { el, mount, table } from "./dom.js";
import type { View } from "./main.js";

const field = (
  id: string,
  label: string,
  attrs: Record<string, string | number | boolean> = {},
) => {
  const input = el("input", { id, name: id, maxlength: 256, ...attrs }) as HTMLInputElement;
  return { input, nodes: [el("label", { for: id }, label), input] };
};

/** Access: who am I, can I (the explain RPC), roles, bindings, API keys with the token shown once. */
export async function accessView(view: View): Promise<void> {
  const who = await api.access.whoAmI({}, { signal: view.signal });
  const perm = field("perm", "Permission", { placeholder: "vm:migrate", maxlength: 128 });
  const principal = field("who", "Principal (empty: me)");
  const answer = el("p", { "data-testid": "can-i", "aria-live": "polite" });
  const keyOut = el("div", { "aria-live": "polite" });
  const desc = field("key-desc", "Description");
  const sections: HTMLElement[] = [];
  for (const [title, load] of [
    [
      "Roles",
      async () =>
        table(
          "Roles",
          ["Role", "Grants", "Built in"],
          (await api.access.listRoles({}, { signal: view.signal })).roles.map((r) => [
            r.name,
            r.grants.join(", "),
            r.builtIn ? "yes" : "no",
          ]),
        ),
    ],
    [
      "Bindings",
      async () =>
        table(
          "Bindings",
          ["Principal", "Roles", "Tenant", "Source"],
          (await api.access.listBindings({}, { signal: view.signal })).bindings.map((b) => [
            b.principal,
            b.roles.join(", "),
            b.tenant,
            b.source,
          ]),
        ),
    ],
    [
      "API keys",
      async () =>
        table(
          "API keys",
          ["Id", "Principal", "Roles", "Tenant", "Description"],
          (await api.access.listApiKeys({}, { signal: view.signal })).keys.map((k) => [
            k.id,
            k.principal,
            k.roles.join(", "),
            k.tenant,
            k.description,
          ]),
        ),
    ],
  ] as const) {
    const box = el("section", {}, el("h2", {}, title));
    sections.push(box);
    load().then(
      (t) => box.append(t),
      (err: unknown) => box.append(el("p", {}, describe(err))),
    );
  }
  const people = await usersSection();
  mount(
    view.main,
    el("h1", {}, "Access"),
    el(
      "p",
      {},
      `Signed in as ${who.principal} (${who.authMethod}); roles: ${who.roles.join(", ") || "from bindings"}${who.tenant === "" ? "" : `; tenant ${who.tenant}`}.`,
    ),
    el("h2", {}, "Can I?"),
    el(
      "form",
      {
        onsubmit: async (e: Event) => {
          e.preventDefault();
          try {
            const r = await api.access.checkPermission({
              permission: perm.input.value,
              principal: principal.input.value,
            });
            answer.textContent = `${r.allowed ? "Yes" : "No"}: ${r.reason}`;
          } catch (err) {
            answer.textContent = describe(err);
          }
        },
      },
      perm.nodes,
      principal.nodes,
      el("button", { type: "submit" }, "Check"),
    ),
    answer,
    el("h2", {}, "New API key"),
    el(
      "form",
      {
        onsubmit: async (e: Event) => {
          e.preventDefault();
          try {
            const r = await api.access.createApiKey({ description: desc.input.value });
            mount(
              keyOut,
              el("p", {}, `Key ${r.key?.id}: copy the token now, it is shown only once:`),
              el("code", { "data-testid": "api-token" }, r.token),
            );
          } catch (err) {
            mount(keyOut, el("p", { role: "alert" }, describe(err)));
          }
        },
      },
      desc.nodes,
      el("button", { type: "submit" }, "Create key"),
    ),
    keyOut,
    people,
    sections,
  );
}

/** Panel users, for admins only (the server refuses anyone else): create, reset, disable, end sessions. */
async function usersSection(): Promise<HTMLElement | null> {
  const list = (await authGet("users")) as
    | { users: { name: string; principal: string; disabled: boolean }[] }
    | undefined;
  if (list === undefined) return null;
  const out = el("p", { "aria-live": "polite" });
  const box = el("section", {});
  const act = async (body: Record<string, string>) => {
    const r = await authPost("users", body);
    out.textContent = r.ok ? `${body.action} ${body.user}: done` : r.message;
    if (r.ok) box.replaceWith((await usersSection()) ?? el("p"));
  };
  const user = field("new-user", "User", { maxlength: 63, autocomplete: "off" });
  const password = field("new-password", "Password", {
    type: "password",
    minlength: 12,
    autocomplete: "new-password",
  });
  mount(
    box,
    el("h2", {}, "Panel users"),
    table(
      "Panel users",
      ["User", "Principal (bind roles to it)", "State", "Actions"],
      list.users.map((u) => [
        u.name,
        u.principal,
        u.disabled ? "disabled" : "active",
        el(
          "span",
          { class: "actions" },
          el(
            "button",
            { type: "button", onclick: () => act({ action: "end-sessions", user: u.name }) },
            `End sessions of ${u.name}`,
          ),
          u.disabled
            ? null
            : el(
                "button",
                { type: "button", onclick: () => act({ action: "disable", user: u.name }) },
                `Disable ${u.name}`,
              ),
        ),
      ]),
    ),
    el(
      "form",
      {
        onsubmit: (e: Event) => {
          e.preventDefault();
          void act({
            action: "set-password",
            user: user.input.value,
            password: password.input.value,
          });
          password.input.value = "";
        },
      },
      user.nodes,
      password.nodes,
      el("button", { type: "submit" }, "Create user or set password"),
    ),
    out,
  );
  return box;
}

const AUDIT_HEAD = ["Time", "Principal", "Method", "Decision", "Code", "Reason"];
const auditRow = (r: AuditRecordInfo) => [
  r.ts.slice(0, 19).replace("T", " "),
  r.principal,
  r.method,
  r.decision,
  r.code,
  r.reason,
];

/** Audit: search, and a live tail of new records. */
export async function auditView(view: View): Promise<void> {
  const principal = field("a-principal", "Principal");
  const method = field("a-method", "Method");
  const results = el("div");
  const tailBox = el("div", { "data-testid": "audit-tail" });
  const search = async () => {
    try {
      const r = await api.audit.listAuditRecords(
        { filter: { principal: principal.input.value, method: method.input.value }, pageSize: 50 },
        { signal: view.signal },
      );
      mount(
        results,
        table(`${r.records.length} records`, AUDIT_HEAD, r.records.map(auditRow), "audit"),
      );
    } catch (err) {
      mount(results, el("p", { role: "alert" }, describe(err)));
    }
  };
  const tail: AuditRecordInfo[] = [];
  const tailing = new AbortController();
  view.signal.addEventListener("abort", () => tailing.abort(), { once: true });
  mount(
    view.main,
    el("h1", {}, "Audit"),
    el(
      "form",
      {
        onsubmit: (e: Event) => {
          e.preventDefault();
          void search();
        },
      },
      principal.nodes,
      method.nodes,
      el("button", { type: "submit" }, "Search"),
    ),
    results,
    el("h2", {}, "Live"),
    tailBox,
  );
  await search();
  void follow(
    (signal) => api.audit.followAuditRecords({ backlog: 10 }, { signal }),
    (r) => {
      tail.unshift(r);
      tail.length = Math.min(tail.length, 20);
      mount(tailBox, table("Latest records", AUDIT_HEAD, tail.map(auditRow)));
    },
    tailing.signal,
    (m) => mount(tailBox, el("p", {}, m)),
  );
}

/** Enrollment: a one-time token for a new node, with the CA fingerprint to pin. */
export async function enrollmentView(view: View): Promise<void> {
  const name = field("node-name", "Node name", {
    required: true,
    maxlength: 63,
    pattern: "[a-z0-9][a-z0-9._\\-]*",
  });
  const out = el("div", { "aria-live": "polite" });
  mount(
    view.main,
    el("h1", {}, "Enrollment"),
    el(
      "form",
      {
        onsubmit: async (e: Event) => {
          e.preventDefault();
          try {
            const r = await api.enrollment.createEnrollmentToken(
              { nodeName: name.input.value },
              { signal: view.signal },
            );
            mount(
              out,
              el("p", {}, `Token for ${r.nodeName} (shown once):`),
              el("code", {}, r.token),
              el("p", {}, `CA fingerprint to pin: ${r.caFingerprint}`),
              el(
                "pre",
                {},
                `debvisor-agent enroll --token ${r.token} --ca-fingerprint ${r.caFingerprint}`,
              ),
            );
          } catch (err) {
            mount(out, el("p", { role: "alert" }, describe(err)));
          }
        },
      },
      name.nodes,
      el("button", { type: "submit" }, "Create token"),
    ),
    out,
  );
}
