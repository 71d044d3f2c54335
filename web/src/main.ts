// The panel's page: a hash router over a few views, each a function that
// renders into <main> and stops its streams when the view changes.

import { accessView, auditView, enrollmentView } from "./admin-views.js";
import { api, authGet, authPost, setSignedOutHandler } from "./api.js";
import { migrationsView, nodeView, vmsView, vmView } from "./cluster-views.js";
import { datasetView } from "./dataset-view.js";
import { el, mount, toast } from "./dom.js";
import { startRecording, stopRecording } from "./node-history.js";
import { overviewView } from "./overview-view.js";
import { addOidcSignIn, signInErrorFromAddress } from "./sign-in-options.js";
import { storageView } from "./storage-views.js";

/** What a view gets: where to draw, a signal that aborts when the user leaves. */
export interface View {
  readonly main: HTMLElement;
  readonly signal: AbortSignal;
  readonly tenant: string;
}

const PAGES: [string, string][] = [
  ["#/", "Overview"],
  ["#/vms", "VMs"],
  ["#/migrations", "Migrations"],
  ["#/storage", "Storage"],
  ["#/access", "Access"],
  ["#/audit", "Audit"],
  ["#/enrollment", "Enrollment"],
];

let current = new AbortController();
let me: { principal: string; tenant: string } | undefined;

function loginView(main: HTMLElement, message = ""): void {
  document.getElementById("nav")?.setAttribute("hidden", "");
  mount(document.getElementById("who") as HTMLElement);
  const error = el("p", { class: "error", role: "alert", "data-testid": "login-error" }, message);
  const user = el("input", {
    id: "user",
    name: "user",
    autocomplete: "username",
    required: true,
    maxlength: 63,
  }) as HTMLInputElement;
  const password = el("input", {
    id: "password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
    maxlength: 256,
  }) as HTMLInputElement;
  const form = el(
    "form",
    {
      class: "login",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        error.textContent = "";
        const r = await authPost("login", { user: user.value, password: password.value });
        password.value = "";
        if (!r.ok) {
          error.textContent = r.message;
          return;
        }
        me = undefined;
        await route();
      },
    },
    el("h1", {}, "Sign in"),
    el("label", { for: "user" }, "User"),
    user,
    el("label", { for: "password" }, "Password"),
    password,
    el("button", { type: "submit" }, "Sign in"),
    error,
  );
  mount(main, form);
  error.textContent ||= signInErrorFromAddress();
  void addOidcSignIn(form);
  user.focus();
}

async function route(): Promise<void> {
  current.abort();
  current = new AbortController();
  const main = document.getElementById("main") as HTMLElement;
  me ??= (await authGet("me")) as typeof me;
  if (me === undefined) return loginView(main, "");
  startRecording();
  const nav = document.getElementById("nav") as HTMLElement;
  nav.removeAttribute("hidden");
  const hash = location.hash === "" ? "#/" : location.hash;
  mount(
    nav,
    el(
      "ul",
      {},
      PAGES.map(([href, label]) =>
        el(
          "li",
          {},
          el(
            "a",
            {
              href,
              "aria-current":
                hash === href || (href !== "#/" && hash.startsWith(href)) ? "page" : undefined,
            },
            label,
          ),
        ),
      ),
    ),
  );
  mount(
    document.getElementById("who") as HTMLElement,
    el(
      "span",
      { "data-testid": "principal" },
      me.principal,
      me.tenant === "" ? "" : ` (tenant ${me.tenant})`,
    ),
    " ",
    el("button", { type: "button", class: "link", onclick: signOut }, "Sign out"),
  );
  const view: View = { main, signal: current.signal, tenant: me.tenant };
  const [, page, id] = /^#\/([a-z]*)\/?(.*)$/.exec(hash) ?? [];
  const target = decodeURIComponent(id ?? "");
  try {
    if (page === "" || page === undefined) await overviewView(view);
    else if (page === "nodes" && target !== "") await nodeView(view, target);
    else if (page === "vms" && target !== "") await vmView(view, target);
    else if (page === "vms") await vmsView(view);
    else if (page === "migrations") await migrationsView(view);
    else if (page === "storage" && target !== "") await datasetView(view, target);
    else if (page === "storage") await storageView(view);
    else if (page === "access") await accessView(view);
    else if (page === "audit") await auditView(view);
    else if (page === "enrollment") await enrollmentView(view);
    else mount(main, el("h1", {}, "Not found"), el("p", {}, "No such page."));
  } catch (err) {
    if (!current.signal.aborted)
      mount(
        main,
        el("h1", {}, "Error"),
        el("p", { role: "alert", class: "error" }, String((err as Error).message ?? err)),
      );
  }
  // Move focus to the new content for keyboard and screen-reader users.
  (main.querySelector("h1") as HTMLElement | null)?.setAttribute("tabindex", "-1");
}

async function signOut(): Promise<void> {
  await authPost("logout", {});
  me = undefined;
  current.abort();
  stopRecording();
  loginView(document.getElementById("main") as HTMLElement, "Signed out.");
}

setSignedOutHandler((why) => {
  me = undefined;
  current.abort();
  stopRecording();
  loginView(document.getElementById("main") as HTMLElement, why);
});
window.addEventListener("hashchange", () => void route());
void route();
void api;
toast("");
