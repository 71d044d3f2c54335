import { createManualClock } from "../src/core/index.js";
import { createRbdDriver, createZfsDriver } from "../src/drivers/index.js";
import { createReplay, loadTranscript } from "./helpers/recorded-runner.js";
import { describeStorageConformance, NOW, simulatedWorld } from "./helpers/storage-conformance.js";

const fixtures = new URL("../../test/fixtures/storage/", import.meta.url);

for (const backend of ["zfs", "rbd"] as const) {
  describeStorageConformance({
    name: "simulation",
    backend,
    async setup() {
      return { driver: await simulatedWorld(createManualClock(NOW)), done() {} };
    },
  });
}

describeStorageConformance({
  name: "zfs CLI, recorded output",
  backend: "zfs",
  streamHalves: true,
  async setup(scenario) {
    const replay = createReplay(loadTranscript(new URL("zfs.txt", fixtures), scenario));
    return { driver: createZfsDriver({ runnerFor: replay.runnerFor }), done: replay.assertDone };
  },
});

describeStorageConformance({
  name: "rbd CLI, recorded output",
  backend: "rbd",
  async setup(scenario) {
    const replay = createReplay(loadTranscript(new URL("rbd.txt", fixtures), scenario));
    return {
      driver: createRbdDriver({ runner: replay.runnerFor(undefined) }),
      done: replay.assertDone,
    };
  },
});
