// Scenario: a js light node pushes one message through our node's lightpush v3 service.
// Args: {addr, cluster, contentTopic, payloadHex}. Prints {event:"pushed", successes, failures}.
import { args, emit, fail, fromHex, run, within } from "./common.mjs";
import { lightNode } from "./light_node.mjs";
import { Protocols } from "@waku/sdk";

run(async () => {
  const a = args();
  const node = await lightNode(a);
  await within(10000, "lightpush peer", node.waitForPeers([Protocols.LightPush]));
  emit("connected");
  const encoder = node.createEncoder({ contentTopic: a.contentTopic });
  const result = await within(10000, "lightpush send", node.lightPush.send(encoder, {
    payload: fromHex(a.payloadHex),
    timestamp: new Date(a.timestampMs ?? Date.now()),
  }));
  emit("pushed", {
    successes: result.successes.map((p) => p.toString()),
    failures: result.failures.map((f) => ({ error: String(f.error), peer: f.peerId?.toString() })),
  });
  if (result.successes.length !== 1) fail("lightpush did not succeed");
  await node.stop();
});
