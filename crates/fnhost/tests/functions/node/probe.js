// Node probe for the isolation and contract tests (CommonJS).
'use strict';
const fs = require('fs');

// Module-level state: built once in the zygote, a fresh copy per clone.
let counter = 0;
const loadedAt = Date.now();

exports.handler = async (event, context) => {
  counter += 1;
  const out = {
    counter,
    pid: process.pid,
    cwd: process.cwd(),
    uid: process.getuid(),
    random: Math.random(),
    uuid: require('crypto').randomUUID(),
    leaked_env: Object.keys(process.env).filter((k) => k.startsWith('FNHOST_')),
    context: {
      awsRequestId: context.awsRequestId,
      functionName: context.functionName,
      functionVersion: context.functionVersion,
      memoryLimitInMB: context.memoryLimitInMB,
      invokedFunctionArn: context.invokedFunctionArn,
      logGroupName: context.logGroupName,
      logStreamName: context.logStreamName,
      remaining: context.getRemainingTimeInMillis(),
      callbackWaitsForEmptyEventLoop: context.callbackWaitsForEmptyEventLoop,
    },
    loaded_at: loadedAt,
  };
  // Writes to /tmp and the root must not survive the invocation.
  out.tmp_before = fs.existsSync('/tmp/marker');
  fs.writeFileSync('/tmp/marker', 'x');
  try {
    out.task_before = fs.existsSync('/var/task/marker');
    fs.writeFileSync('/var/task/marker', 'x');
    out.task_written = true;
  } catch (e) {
    out.task_written = e.code;
  }
  if (event.echo !== undefined) out.echo = event.echo;
  return out;
};

// Callback style; the answer goes out once the event loop is empty.
exports.callback = (event, context, callback) => {
  let ticks = 0;
  const result = { style: 'callback', ticks: 0 };
  callback(null, result);
  // Still counted: callbackWaitsForEmptyEventLoop is true by default.
  setTimeout(() => {
    ticks += 1;
    result.ticks = ticks;
  }, 20);
};

// Callback style answering at once.
exports.callbackNow = (event, context, callback) => {
  context.callbackWaitsForEmptyEventLoop = false;
  callback(null, { style: 'callback-now' });
  setTimeout(() => {}, 60_000);
};

exports.callbackError = (event, context, callback) => {
  setImmediate(() => callback(new TypeError('bad input: ' + event.what)));
};

exports.fail = async (event) => {
  throw new RangeError(`probe failure: ${event.what}`);
};

exports.failString = async () => {
  throw 'plain string';
};

exports.rejectLater = () => new Promise((_, reject) => setTimeout(() => reject(new Error('later')), 5));

exports.unmarshalable = async () => ({ big: 10n });

exports.sync = (event) => ({ sync: true, got: event.value });

exports.nested = { deeper: { handler: async () => ({ nested: true }) } };

exports.notAFunction = 42;

// Timers, promises and allocation in every clone; with `pool`, libuv's
// threadpool too (async fs, crypto, zlib), started inside the clone.
exports.busy = async (event) => {
  const garbage = [];
  for (let i = 0; i < (event.garbage || 500); i++) garbage.push({ i, s: 'x'.repeat(64), a: new Array(16).fill(i) });
  const out = { seq: event.seq, garbage: garbage.length };
  if (event.pool) {
    const zlib = require('zlib');
    const crypto = require('crypto');
    const [file, hash, packed] = await Promise.all([
      fs.promises.readFile('/var/task/probe.js', 'utf8'),
      new Promise((resolve, reject) =>
        crypto.pbkdf2('secret', 'salt', 100, 32, 'sha256', (err, key) => (err ? reject(err) : resolve(key.toString('hex')))),
      ),
      new Promise((resolve, reject) => zlib.gzip(Buffer.alloc(16 * 1024, 7), (err, out) => (err ? reject(err) : resolve(out.length)))),
    ]);
    Object.assign(out, { file_bytes: file.length, hash, packed });
  }
  await new Promise((resolve) => setTimeout(resolve, 1));
  out.chained = await [1, 2, 3].reduce((p, n) => p.then((acc) => acc + n), Promise.resolve(0));
  counter += 1;
  out.counter = counter;
  return out;
};

// process.exit inside a handler: a function error, as on Lambda.
exports.exits = () => {
  process.exit(3);
};

// Past the memory limit: the cgroup kills the sandbox.
exports.hog = async () => {
  const chunks = [];
  for (let i = 0; i < 64; i++) chunks.push(Buffer.alloc(8 << 20, i));
  return { chunks: chunks.length };
};

// Past the deadline: the sandbox is killed.
exports.spin = async () => {
  for (;;) {}
};

// libuv's signal lock (see crates/fnhost-shim/src/uv_signal_lock.rs): the
// one blocking pipe this process holds both ends of. Taking its byte and
// exiting is what a clone killed while holding the lock leaves behind.
function signalLockFds() {
  const pipes = {};
  for (const name of fs.readdirSync('/proc/self/fd')) {
    let link;
    try { link = fs.readlinkSync('/proc/self/fd/' + name); } catch (_) { continue; }
    if (!link.startsWith('pipe:[')) continue;
    const flags = parseInt(fs.readFileSync('/proc/self/fdinfo/' + name, 'utf8').match(/flags:\s*(\d+)/)[1], 8);
    if (flags & 0o4000) continue; // O_NONBLOCK
    const ends = (pipes[link] = pipes[link] || {});
    if ((flags & 3) === 0) ends.read = Number(name);
    if ((flags & 3) === 1) ends.write = Number(name);
  }
  return Object.values(pipes).filter((e) => e.read !== undefined && e.write !== undefined);
}

function takeSignalLock() {
  const locks = signalLockFds();
  if (locks.length !== 1) return { taken: false, candidates: locks.length };
  fs.readSync(locks[0].read, Buffer.alloc(1), 0, 1, null);
  process.exit(0); // dies holding it
}

// Needs the signal lock: a signal watcher, a signal delivered to it, and a
// child process (libuv watches SIGCHLD for it).
async function useSignals() {
  // Signal watchers do not keep the loop alive; the timer does meanwhile.
  const alive = setTimeout(() => {}, 60000);
  const got = await new Promise((resolve) => {
    process.once('SIGUSR2', () => resolve('SIGUSR2'));
    process.kill(process.pid, 'SIGUSR2');
  });
  clearTimeout(alive);
  const child = require('child_process').spawnSync('/bin/sh', ['-c', 'echo child'], { encoding: 'utf8' });
  return { got, child: child.stdout.trim(), counter: ++counter };
}

exports.signalLock = async (event) => (event.take ? takeSignalLock() : useSignals());
