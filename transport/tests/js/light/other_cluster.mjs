// Scenario: a js light node of another cluster dials our node; our metadata gate must drop
// it. Args: {addr, cluster} (cluster: the js node's, not ours). Prints "dialed" (or
// "dial-failed") and then "disconnected" once no connection to our node is left.
import { args, emit, run, within } from "./common.mjs";
import { lightNode } from "./light_node.mjs";

run(async () => {
  const a = args();
  let node;
  let onDisconnect;
  const gone = new Promise((resolve) => {
    onDisconnect = resolve;
  });
  try {
    node = await lightNode({
      ...a,
      onCreate: (n) => n.libp2p.addEventListener("peer:disconnect", (e) => onDisconnect(e.detail)),
    });
    emit("dialed");
  } catch (e) {
    // The connection may be closed before the dial resolves.
    emit("dial-failed", { error: String(e) });
    return;
  }
  await within(15000, "disconnection by our node", (async () => {
    if (node.libp2p.getConnections().length > 0) await gone;
  })());
  emit("disconnected", { connections: node.libp2p.getConnections().length });
  await node.stop();
});
