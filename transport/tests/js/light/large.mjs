// Scenario: large transfers from js over yamux must not cost the connection.
// Args: {addr, cluster, contentTopic, bigPayloadBytes, bulkBytes, yamuxMaxMessageSize}.
// 1. lightpush of a message as large as js-waku sends (its cap is 1 MiB on the wire):
//    our service refuses it (413) after reading it; prints "big-push" {successes, failures}.
// 2. `bulkBytes` written in one piece on a ping stream, which our node reads and echoes
//    32 bytes at a time (js-waku's own protocols send at most 1 MiB per stream; ping is the
//    stream of ours that reads any length): prints "bulk" {echoed}.
// 3. a small lightpush on the same connection: prints "small-push" {successes, failures}.
// Finally "connection" {same, disconnects}: whether the connection of step 1 is still the
// only one, and how many times the peer disconnected.
import { args, emit, run, within } from "./common.mjs";
import { lightNode } from "./light_node.mjs";
import { Protocols } from "@waku/sdk";

run(async () => {
  const a = args();
  let disconnects = 0;
  const node = await lightNode({
    ...a,
    onCreate: (n) => n.libp2p.addEventListener("peer:disconnect", () => disconnects++),
  });
  await within(10000, "lightpush peer", node.waitForPeers([Protocols.LightPush]));
  const [conn] = node.libp2p.getConnections();
  const encoder = node.createEncoder({ contentTopic: a.contentTopic });
  const report = (r) => ({
    successes: r.successes.map((p) => p.toString()),
    failures: r.failures.map((f) => String(f.error)),
  });

  const big = await within(10000, "big lightpush", node.lightPush.send(encoder, {
    payload: new Uint8Array(a.bigPayloadBytes).fill(1),
  }, { autoRetry: false }));
  emit("big-push", report(big));

  const stream = await node.libp2p.dialProtocol(conn.remotePeer, "/ipfs/ping/1.0.0");
  const bulk = new Uint8Array(a.bulkBytes).fill(0x5a);
  let echoed = 0;
  await within(15000, "bulk echo", Promise.all([
    stream.sink([bulk]),
    (async () => {
      for await (const chunk of stream.source) {
        echoed += chunk.byteLength;
        if (echoed >= a.bulkBytes) break;
      }
    })(),
  ]));
  await stream.close().catch(() => {});
  emit("bulk", { echoed });

  const small = await within(10000, "small lightpush", node.lightPush.send(encoder, {
    payload: new Uint8Array([1, 2, 3]),
    timestamp: new Date(),
  }));
  emit("small-push", report(small));
  const conns = node.libp2p.getConnections();
  emit("connection", { same: conns.length === 1 && conns[0].id === conn.id, disconnects });
  await node.stop();
});
