// Scenario: a js-waku relay node (@waku/sdk 0.0.27 createRelayNode + @waku/relay 0.0.14, the
// last published relay node) meshes with our node on one shard, then publishes the given
// messages ("publish") or waits for `expect` messages ("receive").
// Args: {addr, cluster, shard, contentTopic, mode, messages: [{payloadHex, timestampMs}],
//        expect}.
// Prints "ready" once our node is in its mesh, then "sent" {hash, recipients} per message
// or "received" {payloadHex, contentTopic, timestampMs, hash} per message.
import { args, emit, fail, fromHex, hex, run, within } from "./common.mjs";
import { tcp } from "@libp2p/tcp";
import { yamux } from "@chainsafe/libp2p-yamux";
import { createEncoder, createDecoder } from "@waku/sdk";
import { createRelayNode } from "@waku/sdk/relay";
import { messageHash } from "@waku/message-hash";

run(async () => {
  const a = args();
  const shardInfo = { clusterId: a.cluster, shard: a.shard };
  const pubsubTopic = `/waku/2/rs/${a.cluster}/${a.shard}`;
  const node = await createRelayNode({
    networkConfig: { clusterId: a.cluster, shards: [a.shard] },
    defaultBootstrap: false,
    libp2p: {
      hideWebSocketInfo: true,
      // @waku/sdk's defaults are WebSockets and mplex; our node listens on TCP with yamux.
      transports: [tcp()],
      streamMuxers: [yamux()],
    },
  });
  await node.start();
  node.libp2p.addEventListener("peer:disconnect", (e) => {
    emit("disconnected", { peer: e.detail.toString() });
  });
  const received = [];
  let wake = () => {};
  if (a.mode === "receive") {
    const decoder = createDecoder(a.contentTopic, shardInfo);
    await node.relay.subscribe([decoder], (msg) => {
      received.push(msg);
      wake();
    });
  }
  await node.dial(a.addr);
  await within(10000, "our node in the js relay mesh", (async () => {
    while (node.relay.getMeshPeers(pubsubTopic).length === 0) {
      await new Promise((r) => setTimeout(r, 50));
    }
  })());
  emit("ready", { peerId: node.libp2p.peerId.toString() });

  if (a.mode === "publish") {
    const encoder = createEncoder({ contentTopic: a.contentTopic, pubsubTopicShardInfo: shardInfo });
    for (const m of a.messages) {
      const message = { payload: fromHex(m.payloadHex), timestamp: new Date(m.timestampMs) };
      const result = await node.relay.send(encoder, message);
      if (result.failures.length > 0 || result.successes.length === 0) {
        fail(`relay send: ${JSON.stringify(result.failures)}`);
      }
      const proto = await encoder.toProtoObj(message);
      emit("sent", {
        hash: hex(messageHash(pubsubTopic, proto)),
        recipients: result.successes.map((p) => p.toString()),
      });
    }
  } else {
    let emitted = 0;
    await within(10000, `${a.expect} relay messages`, (async () => {
      while (emitted < a.expect) {
        while (emitted < received.length) {
          const m = received[emitted++];
          emit("received", {
            payloadHex: hex(m.payload),
            contentTopic: m.contentTopic,
            pubsubTopic: m.pubsubTopic,
            timestampMs: m.timestamp?.getTime() ?? null,
            hash: hex(messageHash(pubsubTopic, m.proto)),
          });
        }
        if (emitted < a.expect) await new Promise((r) => { wake = r; });
      }
    })());
  }
  // Publishing is fire-and-forget: give gossipsub a moment to flush before stopping.
  await new Promise((r) => setTimeout(r, 200));
  await node.stop();
});
