// A js-waku light node (@waku/sdk createLightNode) that dials one of our nodes over TCP.
import "./common.mjs";
import { tcp } from "@libp2p/tcp";
import { yamux } from "@chainsafe/libp2p-yamux";
import { mplex } from "@libp2p/mplex";
import { createLightNode } from "@waku/sdk";

/**
 * Starts a light node of `cluster` (autosharding over 8 shards, as our tests use) with no
 * discovery, and dials `addr` (a multiaddr string with /p2p/).
 *
 * Transports: @waku/sdk's default is WebSockets; our node listens on TCP, so TCP is given
 * through the sdk's `libp2p` options, which replace the defaults. Muxers: `muxer` is
 * "yamux" (what our node speaks) or "mplex" (the sdk's default). `yamuxMaxMessageSize`
 * raises js-yamux's largest frame (default 64 KiB): a frame is then bounded by the
 * receiver's window only. `onCreate` is called with the node before it dials.
 */
export async function lightNode({ addr, cluster, muxer = "yamux", yamuxMaxMessageSize, onCreate }) {
  const node = await createLightNode({
    networkConfig: { clusterId: cluster, numShardsInCluster: 8 },
    defaultBootstrap: false,
    discovery: { dns: false, peerExchange: false, peerCache: false },
    libp2p: {
      // The sdk prints a banner about WebSocket failures on stdout unless told not to.
      hideWebSocketInfo: true,
      transports: [tcp()],
      streamMuxers:
        muxer === "mplex"
          ? [mplex()]
          : [yamux(yamuxMaxMessageSize ? { maxMessageSize: yamuxMaxMessageSize } : {})],
    },
  });
  if (onCreate) onCreate(node);
  await node.dial(addr);
  return node;
}
