// VM lifecycle in the panel: start, stop, reboot, delete and create, each
// followed to its outcome on WatchOperation, and the VM's recent events.

import { EventObjectKind } from "../../src/gen/debvisor/v1/event_pb.js";
import { StorageBackend } from "../../src/gen/debvisor/v1/storage_pb.js";
import {
  type VmInfo,
  type VmOperation,
  VmOperationKind,
  VmOperationState,
  VmState,
} from "../../src/gen/debvisor/v1/vm_pb.js";
import { api, describe, follow } from "./api.js";
import { el, mount, progress } from "./dom.js";
import type { View } from "./main.js";
import { objectEvents } from "./object-events.js";

/** A graceful stop waits this long before the VM is forced off. */
const STOP_TIMEOUT_MS = 30_000;
const GIB = 1024n ** 3n;
const MIB = 1024n ** 2n;

const done = (s: VmOperationState) =>
  s === VmOperationState.SUCCEEDED ||
  s === VmOperationState.FAILED ||
  s === VmOperationState.CANCELLED;
const opState = (s: VmOperationState) => VmOperationState[s]?.toLowerCase() ?? String(s);
const opKind = (k: VmOperationKind) => VmOperationKind[k]?.toLowerCase() ?? "operation";

/** An operation's progress and outcome (kind, state, message, reason). */
function drawOperation(op: VmOperation, out: HTMLElement): void {
  mount(
    out,
    progress(`${op.phase || opState(op.state)} of ${op.vmId}`, op.percent),
    el(
      "p",
      {
        "data-testid": "operation-state",
        role: done(op.state) && op.state !== VmOperationState.SUCCEEDED ? "alert" : undefined,
        class: op.state === VmOperationState.FAILED ? "error" : undefined,
      },
      `${opKind(op.kind)} ${opState(op.state)}${op.message === "" ? "" : `: ${op.message}`}${op.reason === "" ? "" : ` (${op.reason})`}`,
    ),
  );
}

/**
 * Follows an accepted operation on WatchOperation, drawing its progress into
 * `out`; resolves with the last state seen.
 */
async function followOperation(
  accepted: VmOperation,
  out: HTMLElement,
  signal: AbortSignal,
): Promise<VmOperation> {
  let last = accepted;
  const draw = (op: VmOperation) => drawOperation(op, out);
  draw(accepted);
  if (done(accepted.state)) return accepted;
  const stop = new AbortController();
  signal.addEventListener("abort", () => stop.abort(), { once: true });
  await follow(
    (s) => api.vms.watchOperation({ operationId: accepted.id }, { signal: s }),
    (op) => {
      last = op;
      draw(op);
      if (done(op.state)) stop.abort();
    },
    stop.signal,
    (m) => mount(out, el("p", { role: "alert", class: "error" }, m)),
  );
  return last;
}

/** Start, stop, reboot and delete buttons for one VM, and its recent events. */
export async function vmLifecycle(
  view: View,
  vm: VmInfo,
  onDone: (op: VmOperation) => void,
  last?: VmOperation,
): Promise<HTMLElement> {
  const out = el("div", { "data-testid": "vm-operation", "aria-live": "polite" });
  // After a re-render the outcome of the last operation stays in view.
  if (last !== undefined) drawOperation(last, out);
  const buttons: HTMLButtonElement[] = [];
  const act = (
    label: string,
    run: () => Promise<VmOperation>,
    after: (op: VmOperation) => void = onDone,
  ) => {
    const b = el(
      "button",
      {
        type: "button",
        onclick: async () => {
          if (label === "Delete" && !confirm(`Delete VM ${vm.id}?`)) return;
          for (const x of buttons) x.disabled = true;
          try {
            const op = await followOperation(await run(), out, view.signal);
            if (op.state === VmOperationState.SUCCEEDED) after(op);
          } catch (err) {
            mount(
              out,
              el(
                "p",
                { role: "alert", class: "error", "data-testid": "vm-refusal" },
                describe(err),
              ),
            );
          } finally {
            for (const x of buttons) x.disabled = false;
          }
        },
      },
      label,
    ) as HTMLButtonElement;
    buttons.push(b);
    return b;
  };
  const id = vm.id;
  const running = vm.state === VmState.RUNNING || vm.state === VmState.PAUSED;
  const events = el(
    "div",
    { "data-testid": "vm-events" },
    await objectEvents(EventObjectKind.VM, id, "Recent events", view.signal),
  );
  return el(
    "section",
    { "aria-labelledby": "lifecycle-h" },
    el("h2", { id: "lifecycle-h" }, "Power"),
    el(
      "div",
      { class: "actions" },
      act("Start", () => api.vms.startVm({ vmId: id })),
      act("Stop", () => api.vms.stopVm({ vmId: id, timeoutMs: STOP_TIMEOUT_MS })),
      act("Force off", () => api.vms.stopVm({ vmId: id, force: true })),
      act("Reboot", () => api.vms.rebootVm({ vmId: id, timeoutMs: STOP_TIMEOUT_MS })),
      act(
        "Delete",
        () => api.vms.deleteVm({ vmId: id, force: running }),
        () => {
          location.hash = "#/vms";
        },
      ),
    ),
    el(
      "p",
      { class: "hint" },
      `Stop shuts the VM down and forces it off after ${STOP_TIMEOUT_MS / 1000} s.`,
    ),
    out,
    el("h2", {}, "Events"),
    events,
  );
}

/** Disks, one a line: `POOL/NAME` attaches a dataset, `POOL/NAME=SIZE_GIB` creates one. */
function parseDisks(text: string) {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "")
    .map((l) => {
      const rbd = l.startsWith("rbd:");
      const body = l.replace(/^(zfs|rbd):/, "");
      const eq = body.lastIndexOf("=");
      const path = eq < 0 ? body : body.slice(0, eq);
      const slash = path.indexOf("/");
      const gib = eq < 0 ? "0" : body.slice(eq + 1).trim();
      if (slash < 1 || !/^\d{1,6}$/.test(gib))
        throw new Error(`disk "${l}": expected POOL/NAME or POOL/NAME=SIZE in GiB`);
      // Size 0 is how the API names an existing disk: sent, it would attach one, not create it.
      if (eq >= 0 && BigInt(gib) === 0n)
        throw new Error(
          `disk "${l}": a new disk needs a size of at least 1 GiB (POOL/NAME attaches)`,
        );
      return {
        dataset: {
          backend: rbd ? StorageBackend.BACKEND_RBD : StorageBackend.BACKEND_ZFS,
          pool: path.slice(0, slash),
          name: path.slice(slash + 1),
        },
        sizeBytes: BigInt(gib) * GIB,
      };
    });
}

/** The create form: id, vCPUs, memory, disks, HA, node (optional), start. */
export async function createVmForm(view: View): Promise<HTMLElement> {
  const nodes = await api.nodes.listNodes({}, { signal: view.signal }).catch(() => undefined);
  const input = (id: string, attrs: Record<string, string | number | boolean>) =>
    el("input", { id, name: id, ...attrs }) as HTMLInputElement;
  const vmId = input("new-vm-id", { required: true, maxlength: 63, autocomplete: "off" });
  const vcpus = input("new-vm-vcpus", { type: "number", min: 1, max: 128, value: 1 });
  const memory = input("new-vm-memory", { type: "number", min: 64, max: 4194304, value: 1024 });
  const disks = el("textarea", { id: "new-vm-disks", rows: 2, maxlength: 2000 });
  const ha = input("new-vm-ha", { type: "checkbox" });
  const start = input("new-vm-start", { type: "checkbox", checked: true });
  const node = el(
    "select",
    { id: "new-vm-node" },
    el("option", { value: "" }, "let the planner choose"),
    (nodes?.nodes ?? []).map((n) => el("option", { value: n.info?.id?.id ?? "" }, n.info?.id?.id)),
  ) as HTMLSelectElement;
  const out = el("div", { "data-testid": "create-operation", "aria-live": "polite" });
  const submit = el("button", { type: "submit" }, "Create VM") as HTMLButtonElement;
  const row = (label: string, control: HTMLElement, hint = "") =>
    el(
      "div",
      { class: "field" },
      el("label", { for: control.id }, label),
      control,
      hint === "" ? null : el("span", { class: "hint" }, hint),
    );
  return el(
    "form",
    {
      class: "create",
      "aria-labelledby": "create-h",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        submit.disabled = true;
        try {
          const op = await api.vms.createVm(
            {
              vmId: vmId.value.trim(),
              spec: {
                name: vmId.value.trim(),
                vcpus: Number(vcpus.value),
                memoryBytes: BigInt(Math.trunc(Number(memory.value))) * MIB,
                disks: parseDisks((disks as HTMLTextAreaElement).value),
                ha: ha.checked,
              },
              ...(node.value === "" ? {} : { nodeId: { id: node.value } }),
              start: start.checked,
            },
            { signal: view.signal },
          );
          await followOperation(op, out, view.signal);
        } catch (err) {
          mount(
            out,
            el(
              "p",
              { role: "alert", class: "error", "data-testid": "create-error" },
              describe(err),
            ),
          );
        } finally {
          submit.disabled = false;
        }
      },
    },
    el("h2", { id: "create-h" }, "Create a VM"),
    row("VM id", vmId),
    row("vCPUs", vcpus),
    row("Memory (MiB)", memory),
    row("Disks", disks, "one a line: POOL/NAME attaches, POOL/NAME=SIZE (GiB) creates"),
    row("Node", node),
    row("HA", ha),
    row("Start it", start),
    submit,
    out,
  );
}
