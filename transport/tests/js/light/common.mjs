// Shared by the scenario scripts: a Node 20 polyfill, JSON-line output, bounded waits.
// Imported first by every script, so the polyfill is in place before libp2p loads.

// libp2p 2.x and @waku/sdk 0.0.36 declare Node >= 22; on Node 20 only
// Promise.withResolvers (ES2024) is missing.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

/** Prints one JSON line on stdout: the test reads these. */
export function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

/** Reports a failure and exits non-zero. */
export function fail(reason) {
  emit("fail", { reason: String(reason) });
  process.exit(1);
}

/** Rejects after `ms` with `what` in the message. */
export function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The scenario's arguments: one JSON object in argv[2]. */
export function args() {
  try {
    return JSON.parse(process.argv[2] ?? "{}");
  } catch (e) {
    fail(`bad arguments: ${e}`);
  }
}

/** Lines written by the test on stdin, one JSON object each, as an async queue. */
export function commands() {
  const queue = [];
  const waiters = [];
  let buffer = "";
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (chunk) => {
    buffer += chunk;
    let i;
    while ((i = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, i);
      buffer = buffer.slice(i + 1);
      if (!line.trim()) continue;
      const cmd = JSON.parse(line);
      const w = waiters.shift();
      if (w) w(cmd);
      else queue.push(cmd);
    }
  });
  return {
    next() {
      const c = queue.shift();
      if (c) return Promise.resolve(c);
      return new Promise((resolve) => waiters.push(resolve));
    },
  };
}

/** Runs `main`, turning any exception into a failure line; a hard deadline bounds it. */
export function run(main, deadlineMs = 30000) {
  const deadline = setTimeout(() => fail(`deadline of ${deadlineMs} ms exceeded`), deadlineMs);
  main()
    .then(() => {
      clearTimeout(deadline);
      emit("done");
      process.exit(0);
    })
    .catch((e) => fail(e?.stack ?? e));
}

export const hex = (bytes) => Buffer.from(bytes).toString("hex");
export const fromHex = (s) => new Uint8Array(Buffer.from(s, "hex"));
