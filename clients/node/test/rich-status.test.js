'use strict';
// How ShapleyError reads a rich status, from an in-process gRPC server whose refusals carry
// hand-made `grpc-status-details-bin` trailers: what the real server does not send (several
// violations, details of other types, bytes that do not decode). The real server's refusals are
// tested in client.test.js.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const { ShapleyClient, ShapleyError, DEFAULT_PROTO_PATHS } = require('..');

const rpc = new protobuf.Root().loadSync(
  ['status.proto', 'error_details.proto'].map((name) => path.join(__dirname, '..', 'proto', 'google', 'rpc', name)),
  { keepCase: true },
);
const Status = rpc.lookupType('google.rpc.Status');
const BadRequest = rpc.lookupType('google.rpc.BadRequest');

/** @param {string} type @param {Uint8Array} value */
const any = (type, value) => ({ type_url: `type.googleapis.com/${type}`, value });
/** @param {...{field: string, description: string}} violations */
const badRequest = (...violations) =>
  any('google.rpc.BadRequest', BadRequest.encode({ field_violations: violations }).finish());
/** @param {any[]} details */
const status = (details) => Buffer.from(Status.encode({ code: 3, message: 'refused', details }).finish());

/** The trailer the fake server sends with its next refusal. @type {Buffer} */
let trailer = Buffer.alloc(0);
/** @type {grpc.Server} */ let server;
/** @type {ShapleyClient} */ let client;

before(async () => {
  const protoPath = DEFAULT_PROTO_PATHS.find((candidate) => fs.existsSync(candidate));
  const loaded = /** @type {any} */ (grpc.loadPackageDefinition(protoLoader.loadSync(String(protoPath))));
  server = new grpc.Server();
  server.addService(loaded.shapley.v1.Shapley.service, {
    GetServerInfo: (/** @type {any} */ _call, /** @type {any} */ callback) => {
      const metadata = new grpc.Metadata();
      metadata.set('grpc-status-details-bin', trailer);
      callback({ code: grpc.status.INVALID_ARGUMENT, details: 'refused', metadata });
    },
  });
  const port = await new Promise((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(),
      (error, bound) => (error ? reject(error) : resolve(bound)));
  });
  client = new ShapleyClient(`127.0.0.1:${port}`, { timeout: 10 });
});

after(() => {
  if (client) client.close();
  if (server) server.forceShutdown();
});

/** @param {Buffer} bytes */
async function refusal(bytes) {
  trailer = bytes;
  const error = await client.serverInfo().catch((e) => e);
  assert.ok(error instanceof ShapleyError, String(error));
  assert.equal(error.code, 'INVALID_ARGUMENT');
  assert.equal(error.details, 'refused');
  return error;
}

test('every BadRequest violation, in order; details of other types are skipped', async () => {
  const error = await refusal(status([
    any('google.rpc.ErrorInfo', Buffer.from([0x0a, 0x01, 0x78])),
    badRequest({ field: 'rows', description: 'has 4 features' }, { field: 'predictions', description: 'has 3 rows' }),
    badRequest({ field: 'context_id', description: 'is required' }),
  ]));
  assert.deepEqual(error.violations, [
    { field: 'rows', description: 'has 4 features' },
    { field: 'predictions', description: 'has 3 rows' },
    { field: 'context_id', description: 'is required' },
  ]);
  assert.equal(error.field, 'rows');
});

// A throw while reading the trailer would leave the call's Promise pending: the timeout fails it.
test('a trailer that does not decode leaves the code and message, with no field', { timeout: 20_000 }, async () => {
  const garbled = await refusal(Buffer.from([0x1a, 0xff, 0xff, 0xff, 0x0f]));
  assert.deepEqual(garbled.violations, []);
  assert.equal(garbled.field, null);
  const badDetail = await refusal(status([
    any('google.rpc.BadRequest', Buffer.from([0x0a, 0x7f])),
    badRequest({ field: 'rows', description: 'is required' }),
  ]));
  assert.deepEqual(badDetail.violations, [{ field: 'rows', description: 'is required' }]);
});
