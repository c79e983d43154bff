'use strict';
/**
 * grpc-js client for the equivalence tests: the test harness's driver.
 *
 *     node client.js --modules DIR serve
 *
 * DIR is where tests/src/node.rs installed package.json with `npm ci`.
 * Reads commands as JSON lines on stdin and answers each with one JSON line
 * on stdout. Commands run concurrently, so answers may come out of order:
 * match them by "id". Ends when stdin closes.
 *
 * The protocol is tests/peers/python/client.py's `serve` mode (its docstring
 * lists the commands and answers), so the harness drives both alike:
 *
 *     {"id": 1, "op": "version"}
 *         -> {"id": 1, "grpcjs": "1.14.7", "proto_loader": "...", "node": "v20..."}
 *     {"id": 2, "op": "call", "target": "127.0.0.1:PORT", "path": "/pkg.Service/method",
 *      "kind": "unary_unary" | "unary_stream" | "stream_unary" | "stream_stream",
 *      "requests": ["<base64>", ...], "metadata": [{"name", "text" | "bin"}],
 *      "timeout": seconds | null, "pingpong": bool, "raw": bool,
 *      "response_type": "pkg.Message" | null, "compression": "identity" | "gzip" | "deflate" | null,
 *      "fresh_channel": bool, "channel_compression": ... | null, "cancel_after": N | null}
 *         -> {"id": 2, "code": N, "details": "...", "headers": [...], "trailers": [...],
 *             "responses": ["<base64>", ...], "rich_status": "<base64>" | null}
 *
 * Calls of the methods of the protos go through grpc-js with the method's
 * serializers from @grpc/proto-loader: each request is decoded into its
 * message and grpc-js encodes it again; each reply is decoded by grpc-js and
 * encoded again for the answer. Other paths, calls whose "kind" is not the
 * method's, and "raw" calls send the request bytes as they are; a
 * "response_type" decodes the replies as that message (protobufjs) instead.
 *
 * What grpc-js cannot do the way the command says:
 *
 * - A call's own compression: grpc-js chooses the compression of requests
 *   per channel only (`grpc.default_compression_algorithm`), so a call with
 *   "compression" runs on a channel of its own with that default (which
 *   also makes a call's "identity" win over a "channel_compression").
 * - "rich_status" is the `grpc-status-details-bin` trailer as received
 *   (grpc-js has no helper that parses it); the harness decodes it.
 */

const readline = require('readline');
const { PROTOS, parseArgs, packages, loadProtos, metadataToJson } = require('./common');

// grpc-js's names for the compression algorithms (CompressionAlgorithms).
const ALGORITHMS = { identity: 0, deflate: 1, gzip: 2 };

function kindOf(method) {
  if (method.requestStream) {
    return method.responseStream ? 'stream_stream' : 'stream_unary';
  }
  return method.responseStream ? 'unary_stream' : 'unary_unary';
}

const identity = bytes => bytes;

class Driver {
  constructor(grpc, protobuf, versions, definition) {
    this.grpc = grpc;
    this.protobuf = protobuf;
    this.versions = versions;
    this.methods = new Map();
    for (const value of Object.values(definition)) {
      if (value.format) {
        continue; // a message or enum
      }
      for (const method of Object.values(value)) {
        this.methods.set(method.path, method);
      }
    }
    this.channels = new Map();
    this.root = null;
  }

  /** The shared client (channel) of `target`. */
  channel(target) {
    let client = this.channels.get(target);
    if (!client) {
      client = this.newChannel(target, null);
      this.channels.set(target, client);
    }
    return client;
  }

  newChannel(target, compression) {
    const options = { 'grpc.enable_http_proxy': 0 };
    if (compression) {
      options['grpc.default_compression_algorithm'] = ALGORITHMS[compression];
    }
    return new this.grpc.Client(target, this.grpc.credentials.createInsecure(), options);
  }

  /** A decoder of replies as the message `name` (protobufjs). */
  decoderOf(name) {
    if (!this.root) {
      this.root = new this.protobuf.Root().loadSync(PROTOS, { keepCase: true });
    }
    const type = this.root.lookupType(name);
    return bytes => Buffer.from(type.encode(type.decode(bytes)).finish());
  }

  async handle(command) {
    let answer;
    try {
      if (command.op === 'version') {
        const { versions } = this;
        answer = { grpcjs: versions.grpcjs, proto_loader: versions.protoLoader, node: versions.node };
      } else if (command.op === 'call') {
        answer = await this.call(command);
      } else {
        throw new Error(`unknown op ${JSON.stringify(command.op)}`);
      }
    } catch (error) {
      answer = { error: `${error && error.name}: ${error && error.message}` };
    }
    answer.id = command.id;
    process.stdout.write(JSON.stringify(answer) + '\n');
  }

  async call(command) {
    const own = command.fresh_channel || command.channel_compression || command.compression;
    const client = own
      ? this.newChannel(command.target, command.compression || command.channel_compression)
      : this.channel(command.target);
    try {
      return await this.callOn(client, command);
    } finally {
      if (own) {
        client.close();
      }
    }
  }

  callOn(client, command) {
    const grpc = this.grpc;
    const method = this.methods.get(command.path);
    const kind = command.kind || (method && kindOf(method));
    if (!kind) {
      throw new Error(`${command.path} is not a method of the protos: say its kind`);
    }
    const typed = method && kindOf(method) === kind && !command.raw && !command.response_type;
    const rawRequests = (command.requests || []).map(r => Buffer.from(r, 'base64'));
    const requests = typed ? rawRequests.map(b => method.requestDeserialize(b)) : rawRequests;
    const serialize = typed ? method.requestSerialize : identity;
    let deserialize = typed ? method.responseDeserialize : identity;
    if (command.response_type) {
      deserialize = this.decoderOf(command.response_type);
    }
    // Replies back to bytes for the answer.
    const encode = typed ? r => method.responseSerialize(r) : identity;
    const metadata = new grpc.Metadata();
    for (const item of command.metadata || []) {
      metadata.add(item.name, item.bin !== undefined ? Buffer.from(item.bin, 'base64') : item.text);
    }
    const options = {};
    if (command.timeout !== null && command.timeout !== undefined) {
      options.deadline = new Date(Date.now() + command.timeout * 1000);
    }
    if ((kind === 'unary_unary' || kind === 'unary_stream') && requests.length !== 1) {
      throw new Error(`${kind} takes exactly one request, got ${requests.length}`);
    }
    const cancelAfter = command.cancel_after;
    const path = command.path;

    const unary = kind === 'unary_unary' || kind === 'stream_unary';
    return new Promise(resolve => {
      const responses = [];
      let headers = null;
      let call;
      let done = false;
      // A call with one reply ends as its callback says (grpc-js checks the
      // reply count there), with the trailers of its 'status' event.
      let status = null;
      let callbackDone = !unary;
      let callbackError = null;
      const maybeFinish = () => {
        if (done || status === null || !callbackDone) {
          return;
        }
        done = true;
        finish(callbackError ? { code: callbackError.code, details: callbackError.details, metadata: callbackError.metadata } : status);
      };
      const finish = ended => {
        const trailers = ended.metadata;
        const details = trailers ? trailers.get('grpc-status-details-bin') : [];
        resolve({
          code: ended.code,
          details: ended.details || '',
          headers: metadataToJson(headers),
          trailers: metadataToJson(trailers),
          responses: responses.map(r => Buffer.from(encode(r)).toString('base64')),
          rich_status: details.length > 0 ? Buffer.from(details[0]).toString('base64') : null,
        });
      };
      const cancelNow = () => {
        if (!done) {
          call.cancel();
        }
      };
      const onReply = reply => {
        responses.push(reply);
        if (cancelAfter !== null && cancelAfter !== undefined && cancelAfter > 0 && responses.length >= cancelAfter) {
          cancelNow();
        }
      };
      const unaryCallback = (error, reply) => {
        if (error) {
          callbackError = error;
        } else if (reply !== undefined && reply !== null) {
          responses.push(reply);
        }
        callbackDone = true;
        maybeFinish();
      };

      if (kind === 'unary_unary') {
        call = client.makeUnaryRequest(path, serialize, deserialize, requests[0], metadata, options, unaryCallback);
      } else if (kind === 'stream_unary') {
        call = client.makeClientStreamRequest(path, serialize, deserialize, metadata, options, unaryCallback);
      } else if (kind === 'unary_stream') {
        call = client.makeServerStreamRequest(path, serialize, deserialize, requests[0], metadata, options);
      } else {
        call = client.makeBidiStreamRequest(path, serialize, deserialize, metadata, options);
      }
      call.on('metadata', md => {
        headers = md;
        if (cancelAfter === 0) {
          cancelNow();
        }
      });
      call.on('status', s => {
        status = s;
        maybeFinish();
      });
      if (kind === 'unary_stream' || kind === 'stream_stream') {
        call.on('data', onReply);
        // Errors arrive as 'status' too.
        call.on('error', () => {});
      }
      if (kind === 'stream_unary' || kind === 'stream_stream') {
        // A call that is cancelled keeps its request stream open until then.
        const keepOpen = cancelAfter !== null && cancelAfter !== undefined;
        if (command.pingpong && kind === 'stream_stream') {
          let sent = 0;
          const sendNext = () => {
            if (sent < requests.length) {
              call.write(requests[sent++]);
            } else if (!keepOpen) {
              call.end();
            }
          };
          call.on('data', sendNext);
          sendNext();
          if (requests.length === 0 && !keepOpen) {
            call.end();
          }
        } else {
          for (const request of requests) {
            call.write(request);
          }
          if (!keepOpen) {
            call.end();
          }
        }
      }
    });
  }
}

function main() {
  const { options, words } = parseArgs(process.argv.slice(2));
  if (words[0] !== 'serve') {
    process.stderr.write('usage: node client.js --modules DIR serve\n');
    process.exit(2);
  }
  const { grpc, protoLoader, protobuf, versions } = packages(options.modules);
  const driver = new Driver(grpc, protobuf, versions, loadProtos(protoLoader, false));
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', line => {
    line = line.trim();
    if (!line) {
      return;
    }
    let command;
    try {
      command = JSON.parse(line);
    } catch (error) {
      process.stdout.write(JSON.stringify({ id: null, error: `bad command: ${error.message}` }) + '\n');
      return;
    }
    driver.handle(command);
  });
  // Calls still in flight die with the process.
  lines.on('close', () => process.exit(0));
}

main();
