// Resolve the conflicts of a collection from Node.js, keeping this device's version.
//
//   node examples/node/resolve_conflict.mjs --socket /run/p2psync/control.sock --collection notes
//
// A record is in conflict when two devices wrote it concurrently (e.g. while apart). This
// example lists the conflicts, and for each record picks the sibling written by this device (or,
// when this device wrote none, the winner shown), by its `version` string: resolve {pick:
// {version}}. It never sends an `hlc` back: those exceed 2^53 and JSON.parse rounds them.
// It prints one line per record: `resolved COLLECTION/KEY: kept VALUE (version V) -> NEW`.

import { parseArgs } from "node:util";
import { connect, ControlError } from "./client.mjs";

const { values: options } = parseArgs({
  options: {
    socket: { type: "string", default: process.env.P2PSYNC_SOCKET ?? "/run/p2psync/control.sock" },
    share: { type: "string", default: "default" },
    collection: { type: "string" },
  },
});

const client = await connect(options.socket);
try {
  // pipelined: both requests are on their way before the first answer comes
  const [hello, conflicts] = await Promise.all([
    client.call("hello", { client: "resolve-conflict/1.0" }),
    client.call("conflicts", { share: options.share, collection: options.collection }),
  ]);
  if (!hello.capabilities.includes("resolve.pick_version")) {
    throw new Error(`daemon ${hello.daemon} cannot pick a version (protocol 1.0 needed)`);
  }
  if (conflicts.items.length === 0) console.log("no conflicts");
  for (const record of conflicts.items) {
    const ours = record.siblings.find((sibling) => sibling.origin === hello.device);
    const kept = ours ?? record.siblings[0];
    const where = `${record.collection}/${record.key}`;
    try {
      const written = await client.call("resolve", {
        share: options.share,
        collection: record.collection,
        key: record.key,
        pick: { version: kept.version },
      });
      const value = kept.deleted ? "(deleted)" : JSON.stringify(kept.value);
      console.log(`resolved ${where}: kept ${value} (version ${kept.version}) -> ${written.version}`);
    } catch (error) {
      // another device or app resolved it first, or a new version arrived: look again later
      if (!(error instanceof ControlError && error.code === "conflict")) throw error;
      console.log(`skipped ${where}: ${error.message}`);
    }
  }
} finally {
  client.close();
}
