/**
 * One lane per VM: the operations on one VM take effect one at a time, in
 * the order they were dispatched (a start and a stop delivered together
 * after a reconnect must not race: whichever came second is the one that
 * holds). Operations on different VMs, and those on none, run side by side.
 */
export interface VmLanes {
  /**
   * Runs `task` once every earlier task of `vmId`'s lane has ended (at once
   * for ""). A forced stop waits too: jumping the queue, it let an earlier
   * start or reboot win; a graceful stop ahead of it ends by its timeout.
   */
  run<T>(vmId: string, task: () => Promise<T>): Promise<T>;
}

/** Creates the lanes of one executor. */
export function createVmLanes(): VmLanes {
  const tails = new Map<string, Promise<unknown>>();
  return {
    run(vmId, task) {
      const before = vmId === "" ? undefined : tails.get(vmId);
      const ran = (before ?? Promise.resolve()).then(task);
      if (vmId !== "") {
        // Later tasks wait for this one and every one before it, however each ended.
        const tail = Promise.allSettled([tails.get(vmId), ran]);
        tails.set(vmId, tail);
        void tail.then(() => {
          if (tails.get(vmId) === tail) tails.delete(vmId);
        });
      }
      return ran;
    },
  };
}
