// fnhost zygote shim for Node.js functions (AWS Lambda's Node handler contract).
//
// Runs as a zygote's runtime (node --single-threaded --v8-pool-size=1):
// loads the handler module once (CommonJS, or ESM through node's
// synchronous require of ES modules), loads fnhost's native shim library as
// an N-API addon and calls its fork server. That call returns only in a
// freshly cloned, already isolated sandbox with a libuv loop of its own,
// which serves exactly one invocation and exits.
//
// Nothing here may start libuv's threadpool before the fork (no async fs,
// crypto, zlib or dns): the fork server refuses a zygote that has threads
// beyond node's own parked ones.
//
// Wire format of the invocation socket (see fnhost-zygote/src/protocol.rs):
// u32 LE length | u8 kind | u32 LE meta length | meta JSON | body.
'use strict';

const started = process.hrtime.bigint();
const fs = require('fs');
const path = require('path');

const CONTROL_FD = 3;
const FRAME_INVOKE = 2;
const FRAME_RESULT = 3;
const FRAME_ERROR = 4;
const TASK_ROOT = process.env.LAMBDA_TASK_ROOT || '/var/task';

/// A Lambda runtime error (errorType `Runtime.*`).
class RuntimeError extends Error {
  constructor(type, message) {
    super(message);
    this.errorType = type;
  }
}

function errorObject(err, type) {
  if (err instanceof Error || (err !== null && typeof err === 'object' && 'message' in err)) {
    const stack = typeof err.stack === 'string' ? err.stack.split('\n') : [];
    return {
      errorType: type || err.errorType || err.name || (err.constructor && err.constructor.name) || 'Error',
      errorMessage: String(err.message),
      stackTrace: stack,
    };
  }
  // Lambda's spelling for thrown or rejected non-Error values.
  return { errorType: type || typeof err, errorMessage: String(err), stackTrace: [] };
}

// --- loading the handler -----------------------------------------------

/// Lambda's handler spelling: `dir/file.fn.nested`.
function splitHandler(spec) {
  const dirEnd = spec.lastIndexOf('/') + 1;
  const dot = spec.indexOf('.', dirEnd);
  if (dot < 0) {
    throw new RuntimeError('Runtime.MalformedHandlerName', `bad handler ${spec}: write file.function`);
  }
  return [spec.slice(0, dot), spec.slice(dot + 1)];
}

function isModuleJs(file) {
  // The nearest package.json decides what a .js file is.
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    try {
      return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).type === 'module';
    } catch (e) {
      if (e.code !== 'ENOENT' && e.code !== 'ENOTDIR') return false;
    }
    if (dir === path.dirname(dir)) return false;
  }
}

/// The loaded module of `file` (relative to the task root): file.js,
/// file.mjs, file.cjs, then node's own resolution (a directory, or a
/// package in node_modules).
function loadModule(file) {
  const base = path.resolve(TASK_ROOT, file);
  const candidates = ['.js', '.mjs', '.cjs'].map((ext) => base + ext);
  let target = candidates.find((f) => fs.existsSync(f));
  if (target === undefined) {
    try {
      target = require.resolve(base);
    } catch (e) {
      throw new RuntimeError('Runtime.ImportModuleError', `Error: Cannot find module '${file}' (looked for ${candidates.join(', ')})`);
    }
  }
  try {
    // ES modules too: require() of an ES module without top-level await
    // is synchronous (node 20.19+), so the zygote starts no threadpool.
    return require(target);
  } catch (e) {
    if (e.code === 'ERR_REQUIRE_ASYNC_MODULE') {
      throw new RuntimeError(
        'Runtime.ImportModuleError',
        `${target} uses top-level await; node loads such modules only asynchronously, which starts ` +
          `libuv's threadpool in the zygote (unsafe to fork): move the awaited setup into the handler`,
      );
    }
    if (e instanceof SyntaxError) {
      throw new RuntimeError('Runtime.UserCodeSyntaxError', `${e.name}: ${e.message}`);
    }
    if (e.code === 'MODULE_NOT_FOUND' || e.code === 'ERR_MODULE_NOT_FOUND') {
      throw new RuntimeError('Runtime.ImportModuleError', `Error: ${e.message}`);
    }
    throw e;
  }
}

function loadHandler(spec) {
  const [file, fnPath] = splitHandler(spec);
  const mod = loadModule(file);
  let fn = mod;
  for (const part of fnPath.split('.')) {
    fn = fn === undefined || fn === null ? undefined : fn[part];
  }
  if (typeof fn !== 'function') {
    throw new RuntimeError('Runtime.HandlerNotFound', `${spec} is undefined or not exported`);
  }
  return fn;
}

// --- one invocation, in the clone ---------------------------------------

function readExact(fd, n) {
  const buf = Buffer.allocUnsafe(n);
  let got = 0;
  while (got < n) {
    let k;
    try {
      k = fs.readSync(fd, buf, got, n - got, null);
    } catch (e) {
      if (e.code === 'EINTR' || e.code === 'EAGAIN') continue;
      throw e;
    }
    if (k === 0) throw new Error('invocation socket closed');
    got += k;
  }
  return buf;
}

function readFrame(fd) {
  const header = readExact(fd, 9);
  const length = header.readUInt32LE(0);
  const kind = header.readUInt8(4);
  const metaLen = header.readUInt32LE(5);
  const rest = readExact(fd, length - 5);
  return [kind, rest.subarray(0, metaLen), rest.subarray(metaLen)];
}

function sendFrame(fd, kind, meta, body) {
  const header = Buffer.alloc(9);
  header.writeUInt32LE(1 + 4 + meta.length + body.length, 0);
  header.writeUInt8(kind, 4);
  header.writeUInt32LE(meta.length, 5);
  const frame = Buffer.concat([header, meta, body]);
  for (let off = 0; off < frame.length; ) {
    try {
      off += fs.writeSync(fd, frame, off, frame.length - off);
    } catch (e) {
      if (e.code !== 'EINTR' && e.code !== 'EAGAIN') throw e;
    }
  }
}

function makeContext(meta, deadline, settle) {
  const name = meta.function;
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: name,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION || '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:local:000000000000:function:${name}`,
    memoryLimitInMB: String(meta.memory_mb),
    awsRequestId: meta.request_id,
    logGroupName: `/aws/lambda/${name}`,
    logStreamName: `fnhost/${meta.request_id}`,
    identity: undefined,
    clientContext: undefined,
    getRemainingTimeInMillis() {
      return Math.max(0, Math.floor(deadline - performance.now()));
    },
    // Lambda's legacy completion methods.
    succeed(result) {
      settle(null, result, true);
    },
    fail(err) {
      settle(err === undefined || err === null ? 'handled' : err, undefined, true);
    },
    done(err, result) {
      settle(err, result, true);
    },
  };
}

/// Math.random's state was seeded once, in the zygote: every clone would
/// draw the same numbers. A xoshiro128** generator seeded from the OS
/// (OpenSSL reseeds in each clone: its pid differs from the zygote's)
/// takes its place.
function reseedMathRandom() {
  const s = new Uint32Array(4);
  require('crypto').randomFillSync(s);
  if ((s[0] | s[1] | s[2] | s[3]) === 0) s[0] = 1;
  const rotl = (x, k) => (x << k) | (x >>> (32 - k));
  const next = () => {
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  };
  Math.random = function random() {
    return ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992;
  };
}

/// Page faults (minor + major) this process took so far: a clone starts
/// counting at its fork.
function pageFaults() {
  const usage = process.resourceUsage();
  return usage.minorPageFault + usage.majorPageFault;
}

function serveOne(fd, handler, shim) {
  const ready = pageFaults();
  const [kind, metaBytes, body] = readFrame(fd);
  if (kind !== FRAME_INVOKE) shim.exit(3);
  const meta = JSON.parse(metaBytes.toString('utf8'));
  const deadline = performance.now() + Number(meta.remaining_ms);
  const begun = process.hrtime.bigint();
  let sent = false;
  let pending = null;

  const send = (frameKind, payload) => {
    if (sent) return;
    sent = true;
    const handlerUs = Number((process.hrtime.bigint() - begun) / 1000n);
    const pageFaultsNow = { ready, invocation: pageFaults() - ready };
    const reply = JSON.stringify({ handler_us: handlerUs, page_faults: pageFaultsNow });
    sendFrame(fd, frameKind, Buffer.from(reply), Buffer.from(payload));
    shim.exit(0);
  };
  // Node's own exit joins V8's worker threads, which live only in the
  // zygote: in the clone every exit goes through _exit (stdout and stderr
  // writes are synchronous for files and pipes, nothing is lost).
  const exitNow = (code) => {
    const status = code === undefined || code === null ? process.exitCode || 0 : code;
    send(FRAME_ERROR, JSON.stringify({
      errorType: 'Runtime.ExitError',
      errorMessage: `Runtime exited with error: exit status ${status}`,
      stackTrace: [],
    }));
  };
  process.exit = exitNow;
  process.reallyExit = exitNow;
  const outcome = (err, result) => {
    if (err !== null && err !== undefined) return [FRAME_ERROR, JSON.stringify(errorObject(err))];
    try {
      return [FRAME_RESULT, JSON.stringify(result === undefined ? null : result)];
    } catch (e) {
      return [FRAME_ERROR, JSON.stringify(errorObject(e, 'Runtime.MarshalError'))];
    }
  };
  let settled = false;
  // Callback style: the result goes out once the event loop is empty,
  // unless the handler set context.callbackWaitsForEmptyEventLoop = false.
  const settle = (err, result, now) => {
    if (settled) return;
    settled = true;
    // Serialized when sent, as Lambda does: later changes to `result`
    // before the loop drains are part of the answer.
    if (now || !context.callbackWaitsForEmptyEventLoop) send(...outcome(err, result));
    else pending = [err, result];
  };
  const context = makeContext(meta, deadline, settle);

  process.on('uncaughtException', (err) => send(FRAME_ERROR, JSON.stringify(errorObject(err))));
  process.on('unhandledRejection', (reason) => {
    const error = errorObject(reason);
    send(FRAME_ERROR, JSON.stringify({ ...error, errorType: 'Runtime.UnhandledPromiseRejection', errorMessage: `${error.errorType}: ${error.errorMessage}` }));
  });
  process.on('beforeExit', () => {
    if (pending) send(...outcome(...pending));
    // Nothing left to run and no answer: Lambda's result is null.
    else send(...outcome(null, null));
  });

  let event;
  try {
    event = body.length ? JSON.parse(body.toString('utf8')) : {};
  } catch (e) {
    send(FRAME_ERROR, JSON.stringify(errorObject(e, 'Runtime.UnmarshalError')));
    return;
  }
  let returned;
  try {
    returned = handler(event, context, (err, result) => settle(err, result, false));
  } catch (e) {
    send(...outcome(e));
    return;
  }
  if (returned !== null && typeof returned === 'object' && typeof returned.then === 'function') {
    returned.then(
      (result) => send(...outcome(null, result)),
      (err) => send(...outcome(err === undefined || err === null ? new Error(String(err)) : err)),
    );
  } else if (handler.length < 3 && returned !== undefined) {
    // A synchronous handler without a callback parameter returned its result.
    send(...outcome(null, returned));
  }
}

function reportInitFailure(addon, err) {
  const failure = errorObject(err);
  failure.stage = 'import';
  // The daemon reports it as Runtime.InitError.<type>, as for Python.
  failure.errorType = failure.errorType.replace(/^Runtime\./, '');
  if (addon) addon.initFailed(CONTROL_FD, JSON.stringify(failure));
  process.stderr.write(`fnhost: cannot load the handler: ${failure.errorType}: ${failure.errorMessage}\n`);
  process.reallyExit(1);
}

/// Runs once, in the zygote, every code path an invocation takes except
/// its I/O: node loads internal modules (perf_hooks, crypto, the event
/// machinery) and V8 compiles functions lazily, on first use; done here,
/// clones inherit them instead of paying for them per invocation.
function warmUp() {
  performance.now();
  process.hrtime.bigint();
  pageFaults();
  const frame = Buffer.alloc(9);
  frame.writeUInt32LE(5, 0);
  frame.writeUInt8(FRAME_RESULT, 4);
  frame.writeUInt32LE(0, 5);
  const reply = JSON.stringify({ handler_us: 0, page_faults: { ready: 0, invocation: 0 } });
  Buffer.concat([frame, Buffer.from(reply), Buffer.from('null')]).subarray(9).toString('utf8');
  JSON.parse(JSON.stringify({ a: [1, 'x', null], b: { c: true } }));
  JSON.stringify(errorObject(new TypeError('warm-up')));
  errorObject('warm-up');
  const context = makeContext({ function: 'f', memory_mb: 1, request_id: 'r' }, performance.now(), () => {});
  context.getRemainingTimeInMillis();
  const noop = () => {};
  for (const event of ['uncaughtException', 'unhandledRejection', 'beforeExit']) {
    process.on(event, noop);
    process.removeListener(event, noop);
  }
  Promise.resolve(1).then(noop);
  try {
    fs.readlinkSync('/proc/self');
  } catch (e) {
    // No /proc in the zygote's root.
  }
  // The clone re-seeds Math.random with it.
  require('crypto').randomFillSync(new Uint32Array(4));
}

function main() {
  const handlerSpec = process.env.FNHOST_HANDLER;
  const shimLib = process.env.FNHOST_SHIM_LIB;
  delete process.env.FNHOST_HANDLER;
  delete process.env.FNHOST_SHIM_LIB;
  const addon = { exports: {} };
  process.dlopen(addon, shimLib);
  const shim = addon.exports;

  let handler;
  try {
    handler = loadHandler(handlerSpec);
  } catch (e) {
    reportInitFailure(shim, e);
  }
  warmUp(shim);
  const importUs = Number((process.hrtime.bigint() - started) / 1000n);

  // Returns only in a fresh clone (own namespaces, cgroup, writable root,
  // privileges dropped, a new libuv loop); the zygote stays inside.
  const fd = shim.serve(CONTROL_FD, importUs);
  for (const name of Object.keys(process.env)) {
    if (name.startsWith('FNHOST_')) delete process.env[name];
  }
  // The clone's pivot left it at "/"; Lambda handlers run in the task root.
  try {
    process.chdir(TASK_ROOT);
  } catch (e) {
    // Keep "/".
  }
  // process.pid was read once, in the zygote.
  try {
    Object.defineProperty(process, 'pid', { value: Number(fs.readlinkSync('/proc/self')), configurable: true, enumerable: true, writable: true });
  } catch (e) {
    // No /proc: keep the zygote's.
  }
  reseedMathRandom();
  // Again, in the ready clone while it waits for its request: the first
  // run of each path writes V8's feedback and inline caches, pages the
  // clone would otherwise copy from the zygote inside the request
  // (handler phase p50 0.63 -> 0.31 ms; +0.2 MiB per idle ready sandbox).
  warmUp();
  serveOne(fd, handler, shim);
}

main();
