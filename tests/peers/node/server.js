'use strict';
/**
 * grpc-js server for the equivalence tests: `equivalence.Equivalence` and
 * nameko-grpc's example service (`nameko.example`).
 *
 *     node server.js --modules DIR [--host 127.0.0.1] [--port 0]
 *
 * DIR is where tests/src/node.rs installed package.json with `npm ci`.
 * Once serving, the server prints one JSON line, {"port": N, "grpcjs": V},
 * with the port it bound. It serves until its standard input closes (the
 * test harness holds the other end, so the server ends with the test
 * process however that ends).
 *
 * The behaviour of `equivalence.Equivalence` is described in
 * tests/proto/equivalence.proto; tests/peers/python/server.py (grpcio) and
 * tests/src/equivalence.rs (grpc-blocking) implement it too, and the three
 * must stay identical, except where grpc-js has no way to do what a request
 * asks:
 *
 * - `response_compression` and `reply_uncompressed` are ignored: a grpc-js
 *   server never compresses its replies (it has no API for it; every reply
 *   goes out with its compressed flag clear).
 * - `raise_message`: a handler "raises" the way an asynchronous grpc-js
 *   handler does, by failing the call with an Error that carries no gRPC
 *   code; grpc-js reports it as UNKNOWN with the error's message.
 * - `report_compressed`: the API does not show a request's compressed flag,
 *   so `Reply.request_compressed` stays unset (as from grpcio).
 */

const { parseArgs, packages, loadProtos } = require('./common');

const RENDEZVOUS_TIMEOUT_MS = 30000;
// How long an observing handler waits for its call to be cancelled.
const OBSERVE_TIMEOUT_MS = 30000;
// The longest an `observed` query waits for its record.
const OBSERVED_WAIT_MAX_MS = 60000;

/** n payload bytes: byte i is i % 251. */
function pattern(n) {
  const out = Buffer.alloc(Math.max(n, 0));
  for (let i = 0; i < out.length; i++) {
    out[i] = i % 251;
  }
  return out;
}

const CRC32_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) {
      c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    }
    table[i] = c >>> 0;
  }
  return table;
})();

/** CRC-32 as zlib computes it, continuing from `crc` (0 to start). */
function crc32(data, crc = 0) {
  let c = ~crc >>> 0;
  for (let i = 0; i < data.length; i++) {
    c = CRC32_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  }
  return ~c >>> 0;
}

function sleep(ms) {
  return new Promise(resolve => setTimeout(resolve, ms));
}

/** Makes calls wait for each other: proves they run at the same time. */
class Rendezvous {
  constructor() {
    this.arrived = new Map();
    this.waiters = new Map();
  }

  /** Resolves true once `count` calls arrived with `key`, false after 30 s. */
  wait(key, count) {
    const arrived = (this.arrived.get(key) || 0) + 1;
    this.arrived.set(key, arrived);
    const waiters = this.waiters.get(key) || [];
    this.waiters.set(key, waiters);
    if (arrived >= count) {
      for (const wake of waiters.splice(0)) {
        wake(true);
      }
      return Promise.resolve(true);
    }
    return new Promise(resolve => {
      const timer = setTimeout(() => resolve((this.arrived.get(key) || 0) >= count), RENDEZVOUS_TIMEOUT_MS);
      waiters.push(ok => {
        clearTimeout(timer);
        resolve(ok);
      });
    });
  }
}

/** What observing handlers recorded, by key (see `observed` in the proto). */
class Observations {
  constructor() {
    this.records = new Map();
    this.waiters = new Map();
  }

  put(key, fields) {
    const record = Object.assign(this.records.get(key) || {}, fields);
    this.records.set(key, record);
    if (record.done) {
      for (const wake of (this.waiters.get(key) || []).splice(0)) {
        wake();
      }
    }
  }

  /** The record of `key` once its handler is done observing (or `ms` passed). */
  async waitDone(key, ms) {
    const record = this.records.get(key);
    if (!(record && record.done)) {
      await new Promise(resolve => {
        const timer = setTimeout(resolve, ms);
        const waiters = this.waiters.get(key) || [];
        this.waiters.set(key, waiters);
        waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return Object.assign({}, this.records.get(key) || {});
  }
}

/** The call's time remaining in ms, -1 without a deadline. */
function remainingMs(call) {
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : Number(deadline);
  if (!Number.isFinite(at)) {
    return -1;
  }
  return Math.max(0, Math.floor(at - Date.now()));
}

/** Resolves true once `call` is cancelled (or over), false after `ms`. */
function cancelledWithin(call, ms) {
  if (call.cancelled) {
    return Promise.resolve(true);
  }
  return new Promise(resolve => {
    const timer = setTimeout(() => resolve(call.cancelled), ms);
    call.once('cancelled', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Reads the code (field 1) and message (field 2) of a serialized google.rpc.Status. */
function parseRpcStatus(bytes) {
  let pos = 0;
  const varint = () => {
    let value = 0;
    let shift = 0;
    for (;;) {
      const b = bytes[pos++];
      if (b === undefined) {
        throw new Error('a truncated google.rpc.Status');
      }
      value += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (b < 0x80) {
        return value;
      }
    }
  };
  let code = 0;
  let message = '';
  while (pos < bytes.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) {
      const value = varint();
      if (field === 1) {
        code = value | 0;
      }
    } else if (wire === 2) {
      const len = varint();
      if (field === 2) {
        message = bytes.subarray(pos, pos + len).toString('utf8');
      }
      pos += len;
    } else if (wire === 5) {
      pos += 4;
    } else if (wire === 1) {
      pos += 8;
    } else {
      throw new Error(`wire type ${wire} in a google.rpc.Status`);
    }
  }
  return { code, message };
}

/**
 * `message` without its default-valued fields (recursively): protobufjs
 * encodes every field an object sets, even to its default, and the replies
 * must be encoded as the other servers encode them (the size tests count
 * their bytes).
 */
function compact(message) {
  const out = {};
  for (const [name, value] of Object.entries(message)) {
    if (value === null || value === undefined || value === '' || value === 0 || value === false) {
      continue;
    }
    if ((Buffer.isBuffer(value) || Array.isArray(value)) && value.length === 0) {
      continue;
    }
    out[name] = Array.isArray(value) ? value.map(v => (typeof v === 'object' && !Buffer.isBuffer(v) ? compact(v) : v)) : value;
  }
  return out;
}

function makeEquivalence(grpc) {
  const rendezvous = new Rendezvous();
  const observations = new Observations();

  /** The invocation metadata: the `x-` entries (or all of them), in order. */
  function selectMetadata(call, all) {
    const out = [];
    for (const [name, values] of Object.entries(call.metadata.toJSON())) {
      if (!all && !name.startsWith('x-')) {
        continue;
      }
      for (const value of values) {
        out.push([name, value]);
      }
    }
    return out;
  }

  function toMetadata(pairs) {
    const md = new grpc.Metadata();
    for (const [name, value] of pairs) {
      md.add(name, value);
    }
    return md;
  }

  function asMetadata(pairs) {
    return pairs.map(([name, value]) => ({
      name,
      value: Buffer.isBuffer(value) ? value : Buffer.from(value, 'latin1'),
    }));
  }

  function messageOf(request) {
    const times = request.multiplier === 0 ? 1 : request.multiplier;
    return request.value.repeat(Math.max(times, 0));
  }

  /**
   * The error the handler fails with where `status_code` would fail it, or
   * null: {code, details, metadata} (the metadata, the trailers, gets the
   * call's trailing metadata, and `grpc-status-details-bin` for a rich
   * status), or an Error without a code for `raise_message`.
   */
  function failure(request, state) {
    if (request.raise_message) {
      return new Error(request.raise_message);
    }
    const trailers = state.trailing ? state.trailing.clone() : new grpc.Metadata();
    if (request.error_status.length > 0) {
      const status = parseRpcStatus(request.error_status);
      trailers.set('grpc-status-details-bin', Buffer.from(request.error_status));
      return { code: status.code, details: status.message, metadata: trailers };
    }
    if (request.status_code !== 0) {
      return { code: request.status_code, details: request.status_message, metadata: trailers };
    }
    return null;
  }

  function reply(request, call, md, message, seqno, payloadLen, crc) {
    const payload = request.echo_payload ? request.payload : pattern(request.response_size);
    const seen = request.all_metadata ? selectMetadata(call, true) : md;
    return compact({
      message,
      seqno,
      payload,
      payload_len: payloadLen,
      payload_crc32: crc,
      received_metadata: asMetadata(seen),
    });
  }

  /** Steps 1 to 4 of the proto's description; returns the `x-` metadata. */
  async function prepare(request, call, first, state) {
    const md = selectMetadata(call, false);
    if (request.rendezvous_count > 0) {
      if (!(await rendezvous.wait(request.rendezvous_key, request.rendezvous_count))) {
        throw { code: grpc.status.ABORTED, details: 'rendezvous timed out' };
      }
    }
    if (request.sleep_ms > 0) {
      await sleep(request.sleep_ms);
    }
    if (first) {
      if (request.echo_initial) {
        call.sendMetadata(toMetadata(md));
      }
      if (request.echo_trailing) {
        state.trailing = toMetadata(md);
      }
      // `response_compression`: a grpc-js server cannot compress replies.
    }
    return md;
  }

  /** Step 6: observe the call's deadline and cancellation. */
  async function observe(request, call, headersSent) {
    const key = request.observe_key;
    if (!key) {
      return;
    }
    const start = remainingMs(call);
    observations.put(key, { found: true, has_deadline: start >= 0, remaining_ms_at_start: start });
    if (!headersSent) {
      call.sendMetadata(new grpc.Metadata());
    }
    const cancelled = await cancelledWithin(call, OBSERVE_TIMEOUT_MS);
    observations.put(key, { done: true, cancelled, remaining_ms_at_cancel: remainingMs(call) });
  }

  /** Ends a streaming call with `error`, or OK with the trailing metadata. */
  function endStream(call, error, state) {
    if (error) {
      call.emit('error', error);
    } else {
      call.end(state.trailing || undefined);
    }
  }

  /**
   * A reader of a request stream: each call returns a promise of the next
   * request, or null at its end (or once the call is cancelled). Reads one
   * request at a time (flow control holds the rest back). Not `for await`:
   * leaving that loop early destroys the call's stream, status unsent.
   */
  function reader(call) {
    const queue = [];
    let ended = false;
    let wake = null;
    const notify = () => {
      if (wake) {
        const w = wake;
        wake = null;
        w();
      }
    };
    call.pause();
    call.on('data', request => {
      queue.push(request);
      call.pause();
      notify();
    });
    for (const event of ['end', 'close', 'cancelled']) {
      call.on(event, () => {
        ended = true;
        notify();
      });
    }
    return async () => {
      while (queue.length === 0 && !ended) {
        const next = new Promise(resolve => {
          wake = resolve;
        });
        call.resume();
        await next;
      }
      return queue.length > 0 ? queue.shift() : null;
    };
  }

  return {
    async unary_unary(call, callback) {
      const request = call.request;
      const state = {};
      try {
        const md = await prepare(request, call, true, state);
        await observe(request, call, request.echo_initial);
        const error = failure(request, state);
        if (error) {
          callback(error);
          return;
        }
        const r = reply(request, call, md, messageOf(request), 0, request.payload.length, crc32(request.payload));
        callback(null, r, state.trailing);
      } catch (error) {
        callback(error, null, state.trailing);
      }
    },

    async unary_stream(call) {
      const request = call.request;
      const state = {};
      try {
        const md = await prepare(request, call, true, state);
        const count = request._response_count === 'response_count' ? request.response_count : 2;
        const message = messageOf(request);
        for (let i = 0; i < count; i++) {
          call.write(reply(request, call, md, message, i + 1, request.payload.length, crc32(request.payload)));
        }
        await observe(request, call, request.echo_initial || count > 0);
        endStream(call, failure(request, state), state);
      } catch (error) {
        endStream(call, error, state);
      }
    },

    stream_unary(call, callback) {
      const state = {};
      (async () => {
        const messages = [];
        let payloadLen = 0;
        let crc = 0;
        let last = null;
        let md = selectMetadata(call, false);
        let headersSent = false;
        const next = reader(call);
        for (let index = 0, request; (request = await next()) !== null; index++) {
          md = await prepare(request, call, index === 0, state);
          headersSent = headersSent || (index === 0 && request.echo_initial);
          await observe(request, call, headersSent);
          headersSent = headersSent || Boolean(request.observe_key);
          const error = failure(request, state);
          if (error) {
            callback(error);
            return;
          }
          messages.push(messageOf(request));
          payloadLen += request.payload.length;
          crc = crc32(request.payload, crc);
          last = request;
        }
        const base = last || { echo_payload: false, payload: Buffer.alloc(0), response_size: 0, all_metadata: false };
        callback(null, reply(base, call, md, messages.join(','), 0, payloadLen, crc), state.trailing);
      })().catch(error => callback(error, null, state.trailing));
    },

    stream_stream(call) {
      const state = {};
      (async () => {
        const next = reader(call);
        for (let index = 0, request; (request = await next()) !== null; index++) {
          const md = await prepare(request, call, index === 0, state);
          const error = failure(request, state);
          if (error) {
            endStream(call, error, state);
            return;
          }
          // `reply_uncompressed`: replies are never compressed.
          call.write(reply(request, call, md, messageOf(request), index + 1, request.payload.length, crc32(request.payload)));
          await observe(request, call, true);
        }
        endStream(call, null, state);
      })().catch(error => endStream(call, error, state));
    },

    async observed(call, callback) {
      const query = call.request;
      const wait = Math.min(Math.max(query.wait_ms, 0), OBSERVED_WAIT_MAX_MS);
      callback(null, compact(await observations.waitDone(query.key, wait)));
    },
  };
}

/** nameko-grpc's example service, its behaviour verbatim. */
function makeExample() {
  const messageOf = r => r.value.repeat(r.multiplier || 1);
  return {
    unary_unary(call, callback) {
      callback(null, compact({ message: messageOf(call.request) }));
    },
    unary_stream(call) {
      const message = messageOf(call.request);
      call.write(compact({ message, seqno: 1 }));
      call.write(compact({ message, seqno: 2 }));
      call.end();
    },
    stream_unary(call, callback) {
      const messages = [];
      call.on('data', r => messages.push(messageOf(r)));
      call.on('end', () => callback(null, compact({ message: messages.join(',') })));
    },
    stream_stream(call) {
      let index = 0;
      call.on('data', r => call.write(compact({ message: messageOf(r), seqno: ++index })));
      call.on('end', () => call.end());
    },
  };
}

function main() {
  const { options } = parseArgs(process.argv.slice(2));
  const { grpc, protoLoader, versions } = packages(options.modules);
  const definition = grpc.loadPackageDefinition(loadProtos(protoLoader, true));
  // The concurrency tests run 50 streaming calls at once on one connection.
  const server = new grpc.Server({ 'grpc.max_concurrent_streams': 1000 });
  server.addService(definition.equivalence.Equivalence.service, makeEquivalence(grpc));
  server.addService(definition.nameko.example.service, makeExample());
  const host = options.host || '127.0.0.1';
  const port = options.port || '0';
  server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (error, bound) => {
    if (error) {
      process.stderr.write(`could not bind ${host}:${port}: ${error.message}\n`);
      process.exit(1);
    }
    process.stdout.write(JSON.stringify({ port: bound, grpcjs: versions.grpcjs }) + '\n');
  });
  // Serve until stdin closes, then leave at once (calls in flight die).
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
}

main();
