'use strict';
/**
 * What server.js and client.js share: their command line, the packages
 * (installed by tests/src/node.rs with `npm ci` into a folder under the
 * cargo target dir, named by `--modules`), and the protos, loaded at run
 * time with @grpc/proto-loader (no generated code).
 */

const path = require('path');
const { createRequire } = require('module');

/** The protos of the peers, from the repository's layout. */
const PROTOS = [
  path.join(__dirname, '..', '..', 'proto', 'equivalence.proto'),
  path.join(__dirname, '..', '..', '..', 'examples', 'proto', 'example.proto'),
];

/**
 * Parses `--name value` pairs and bare words: {options: {name: value},
 * words: [...]}. A flag given without a value is `true`.
 */
function parseArgs(argv) {
  const options = {};
  const words = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg.startsWith('--')) {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) {
        options[arg.slice(2)] = true;
      } else {
        options[arg.slice(2)] = next;
        i++;
      }
    } else {
      words.push(arg);
    }
  }
  return { options, words };
}

/** `require` for the packages installed under `modulesDir`. */
function packages(modulesDir) {
  if (!modulesDir) {
    throw new Error('--modules DIR (the folder where npm ci installed package.json) is required');
  }
  const requireFrom = createRequire(path.join(path.resolve(modulesDir), 'package.json'));
  return {
    grpc: requireFrom('@grpc/grpc-js'),
    protoLoader: requireFrom('@grpc/proto-loader'),
    protobuf: requireFrom('protobufjs'),
    versions: {
      grpcjs: requireFrom('@grpc/grpc-js/package.json').version,
      protoLoader: requireFrom('@grpc/proto-loader/package.json').version,
      node: process.version,
    },
  };
}

/**
 * The package definition of the protos. `defaults`: fill in the default of
 * every field that is absent (the server's view); without it, only the
 * fields on the wire are set, so that a message decoded and encoded again
 * keeps its bytes (the client's view).
 */
function loadProtos(protoLoader, defaults) {
  return protoLoader.loadSync(PROTOS, {
    keepCase: true,
    longs: Number,
    enums: String,
    bytes: Buffer,
    defaults,
    oneofs: true,
    includeDirs: PROTOS.map(p => path.dirname(p)),
  });
}

/**
 * Metadata as the harness's JSON: [{name, text} | {name, bin}], grouped by
 * name (grpc-js keeps metadata by name), each name's values in order.
 */
function metadataToJson(metadata) {
  const out = [];
  if (!metadata) {
    return out;
  }
  for (const [name, values] of Object.entries(metadata.toJSON())) {
    for (const value of values) {
      out.push(Buffer.isBuffer(value) ? { name, bin: value.toString('base64') } : { name, text: value });
    }
  }
  return out;
}

module.exports = { PROTOS, parseArgs, packages, loadProtos, metadataToJson };
