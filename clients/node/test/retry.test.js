'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const grpc = require('@grpc/grpc-js');

const { ShapleyClient, ShapleyError, retryServiceConfig, DEFAULT_MAX_ATTEMPTS } = require('..');

test('the retry policy retries UNAVAILABLE on every Shapley call, up to maxAttempts', () => {
  const config = retryServiceConfig();
  const [method] = config.methodConfig;
  assert.deepEqual(method.name, [{ service: 'shapley.v1.Shapley' }]);
  assert.equal(method.retryPolicy.maxAttempts, DEFAULT_MAX_ATTEMPTS);
  assert.deepEqual(method.retryPolicy.retryableStatusCodes, ['UNAVAILABLE']);
  assert.deepEqual(retryServiceConfig(1), {});
  for (const bad of [0, 6, 2.5]) {
    assert.throws(() => new ShapleyClient('127.0.0.1:1', { maxAttempts: bad }), RangeError);
  }
});

/**
 * A gRPC server answering one Shapley method with `answer(attempt)`: a status error object, or
 * null for an empty response. Resolves to the server, its port and the attempts so far.
 * @param {string} method
 * @param {(attempt: number) => any} answer
 */
async function fakeReplica(method, answer) {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 << 20 });
  const seen = { attempts: 0 };
  server.register(
    `/shapley.v1.Shapley/${method}`,
    (/** @type {any} */ _call, /** @type {any} */ callback) => {
      seen.attempts += 1;
      const error = answer(seen.attempts);
      if (error) callback(error);
      else callback(null, Buffer.alloc(0));
    },
    (/** @type {Buffer} */ value) => value,
    (/** @type {Buffer} */ value) => value,
    'unary',
  );
  const port = await new Promise((ready, fail) => server.bindAsync(
    '127.0.0.1:0', grpc.ServerCredentials.createInsecure(),
    (/** @type {Error | null} */ error, /** @type {number} */ bound) => (error ? fail(error) : ready(bound)),
  ));
  return { server, port, seen };
}

test('a call answered UNAVAILABLE is tried maxAttempts times, then fails UNAVAILABLE', async () => {
  // A gRPC server whose GetServerInfo always answers UNAVAILABLE, counting the attempts.
  const { server, port, seen } = await fakeReplica(
    'GetServerInfo', () => ({ code: grpc.status.UNAVAILABLE, details: 'starting' }),
  );
  const client = new ShapleyClient(`127.0.0.1:${port}`, { timeout: 20, maxAttempts: 3 });
  try {
    await assert.rejects(client.serverInfo(), (/** @type {any} */ error) => {
      assert.ok(error instanceof ShapleyError);
      assert.equal(error.code, 'UNAVAILABLE');
      return true;
    });
    assert.equal(seen.attempts, 3);
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test('a call larger than gRPC\'s retry buffer is retried too', async () => {
  // gRPC keeps a request for its retries up to its per-call retry buffer (256 KiB unless told):
  // a 4 MB CreateContext whose replica was killed failed UNAVAILABLE at once.
  const { server, port, seen } = await fakeReplica(
    'CreateContext',
    (attempt) => (attempt === 1 ? { code: grpc.status.UNAVAILABLE, details: 'replica stopping' } : null),
  );
  const client = new ShapleyClient(`127.0.0.1:${port}`, { timeout: 20 });
  const request = {
    context: { rows: { dtype: 'DTYPE_FLOAT64', shape: [5000, 100], data: Buffer.alloc(4_000_000) } },
  };
  try {
    await new Promise((done, fail) => /** @type {any} */ (client)._stub.CreateContext(
      request, (/** @type {Error | null} */ error) => (error ? fail(error) : done(undefined)),
    ));
    assert.equal(seen.attempts, 2);
  } finally {
    client.close();
    server.forceShutdown();
  }
});
