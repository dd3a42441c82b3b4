// Scenario: a js light node subscribes through our node's filter v2 service (@waku/sdk
// 0.0.36 filter client) and receives pushes.
// Args: {addr, cluster, contentTopic, expect}. Prints "subscribed", then "received"
// {payloadHex, contentTopic, pubsubTopic, timestampMs, hash} per message.
import { args, emit, fail, hex, run, within } from "./common.mjs";
import { lightNode } from "./light_node.mjs";
import { Protocols, waku } from "@waku/sdk";

run(async () => {
  const a = args();
  const node = await lightNode(a);
  await within(10000, "filter peer", node.waitForPeers([Protocols.Filter]));
  const decoder = node.createDecoder({ contentTopic: a.contentTopic });
  const received = [];
  let wake = () => {};
  const ok = await within(10000, "filter subscribe", node.filter.subscribe([decoder], (m) => {
    received.push(m);
    wake();
  }));
  if (!ok) fail("filter subscribe refused");
  emit("subscribed");
  let emitted = 0;
  await within(10000, `${a.expect} filter pushes`, (async () => {
    while (emitted < a.expect) {
      while (emitted < received.length) {
        const m = received[emitted++];
        emit("received", {
          payloadHex: hex(m.payload),
          contentTopic: m.contentTopic,
          pubsubTopic: m.pubsubTopic,
          timestampMs: m.timestamp?.getTime() ?? null,
          hash: hex(waku.messageHash(m.pubsubTopic, m)),
        });
      }
      if (emitted < a.expect) await new Promise((r) => { wake = r; });
    }
  })());
  await node.filter.unsubscribe([decoder]);
  await node.stop();
});
