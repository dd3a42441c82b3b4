// Scenario: a js light node queries our node's store v3 (@waku/sdk 0.0.36 store client).
// Args: {addr, cluster, contentTopic, queries: [{name, timeStartMs?, timeEndMs?,
//        hashes?: [hex], limit?, forward?}]}.
// Prints "result" {name, pages: [[{payloadHex, contentTopic, timestampMs, hash}]]} per query,
// in the order the client yielded pages and messages.
import { args, emit, fromHex, hex, run, within } from "./common.mjs";
import { lightNode } from "./light_node.mjs";
import { Protocols, waku } from "@waku/sdk";

run(async () => {
  const a = args();
  const node = await lightNode(a);
  await within(10000, "store peer", node.waitForPeers([Protocols.Store]));
  emit("connected");
  const decoder = node.createDecoder({ contentTopic: a.contentTopic });
  for (const q of a.queries) {
    const options = { paginationForward: q.forward ?? true };
    if (q.timeStartMs !== undefined) options.timeStart = new Date(q.timeStartMs);
    if (q.timeEndMs !== undefined) options.timeEnd = new Date(q.timeEndMs);
    if (q.hashes) options.messageHashes = q.hashes.map(fromHex);
    if (q.limit !== undefined) options.paginationLimit = q.limit;
    const pages = [];
    await within(10000, `store query ${q.name}`, (async () => {
      for await (const page of node.store.queryGenerator([decoder], options)) {
        const messages = (await Promise.all(page)).filter((m) => m !== undefined);
        pages.push(messages.map((m) => ({
          payloadHex: hex(m.payload),
          contentTopic: m.contentTopic,
          timestampMs: m.timestamp?.getTime() ?? null,
          hash: hex(waku.messageHash(m.pubsubTopic, m)),
          hashStr: m.hashStr,
        })));
      }
    })());
    emit("result", { name: q.name, pages });
  }
  await node.stop();
});
