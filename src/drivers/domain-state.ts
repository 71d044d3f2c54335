import { VmState } from "../gen/debvisor/v1/vm_pb.js";
import type { DomainState } from "./hypervisor-driver.js";

/** The API's VmState of a domain state a hypervisor reports. */
export function vmStateOf(state: DomainState): VmState {
  switch (state) {
    case "running":
      return VmState.RUNNING;
    case "paused":
      return VmState.PAUSED;
    case "crashed":
      return VmState.CRASHED;
    default:
      return VmState.STOPPED;
  }
}
