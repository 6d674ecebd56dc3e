'use strict';
// The calls that go in chunks (explainStream, and explain refined with a model), against a server
// with small limits: their chunks keep within every limit the server states (rows per request,
// bytes per message) while the client keeps its default maxMessageBytes (64 MiB), and the whole
// call's predictions are checked before the first chunk goes, refused as explain() refuses them.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { ShapleyClient, ShapleyError } = require('..');
const { startServer } = require('../testkit/server');
const { makeRows, model, sigmoid } = require('../testkit/data');

const ROW_LIMIT = 40;
const MESSAGE_LIMIT = 16 << 10;

const rows = makeRows(100, 5, 41);
const spec = { rows, predictions: model(rows) };
const query = makeRows(150, 5, 42);
const queryPredictions = model(query);

/** @type {Awaited<ReturnType<typeof startServer>>} */ let server;
/** @type {ShapleyClient} */ let client;
/** What the client sent: rows per ExplainStream message, and the unary calls by method. */
const sent = { chunks: /** @type {number[]} */ ([]), unary: /** @type {string[]} */ ([]) };

before(async () => {
  server = await startServer({
    args: ['--max-explain-rows', String(ROW_LIMIT), '--max-message-bytes', String(MESSAGE_LIMIT)],
  });
  client = new ShapleyClient(server.target, { timeout: 120 }); // maxMessageBytes left at 64 MiB
  const stub = /** @type {any} */ (client)._stub;
  const open = stub.ExplainStream.bind(stub);
  stub.ExplainStream = (/** @type {any[]} */ ...args) => {
    const call = open(...args);
    const write = call.write.bind(call);
    call.write = (/** @type {any} */ message, /** @type {any[]} */ ...rest) => {
      sent.chunks.push(message.rows.shape[0]);
      return write(message, ...rest);
    };
    return call;
  };
  const unary = /** @type {any} */ (client)._unary.bind(client);
  /** @type {any} */ (client)._unary = (/** @type {string} */ method, /** @type {any[]} */ ...rest) => {
    sent.unary.push(method);
    return unary(method, ...rest);
  };
}, { timeout: 600_000 });

after(async () => {
  if (client) client.close();
  if (server) await server.stop();
});

function clearSent() {
  sent.chunks.length = 0;
  sent.unary.length = 0;
}

/** @param {Float64Array | Float32Array} array @param {number} start @param {number} stop */
const slice = (array, start, stop) => Array.from(array.subarray(start, stop));

test('the server states the limits these tests rely on', async () => {
  const { limits } = await client.serverInfo();
  assert.equal(limits.maxExplainRows, ROW_LIMIT);
  assert.equal(limits.maxMessageBytes, MESSAGE_LIMIT);
});

test('explainStream\'s default chunks are within the server\'s row limit', async () => {
  await client.createContext(spec);
  clearSent();
  // 150 rows of 5 features: 115 rows' answers fit in 90 % of the server's 16 kB messages; the
  // server explains 40 rows per request.
  const streamed = await client.explainStream(spec, query, queryPredictions);
  assert.deepEqual(sent.chunks, [40, 40, 40, 30]);
  assert.deepEqual(streamed.shape, [150, 5]);
  for (let start = 0; start < 150; start += ROW_LIMIT) {
    const stop = Math.min(150, start + ROW_LIMIT);
    const part = await client.explain(spec, query.slice(start, stop), queryPredictions.slice(start, stop));
    assert.deepEqual(slice(streamed.values, start * 5, stop * 5), Array.from(part.values));
    assert.deepEqual(slice(streamed.baseValues, start, stop), Array.from(part.baseValues));
  }
});

test('explainStream without predictions is sized by the context\'s outputs and the server\'s message limit', async () => {
  const wide = makeRows(60, 20, 43);
  const three = wide.map((x) => [sigmoid(x[0]), sigmoid(x[1] - x[2]), sigmoid(x[3] * x[4])]);
  const multi = { rows: wide, predictions: three };
  await client.createContext(multi);
  clearSent();
  // No predictions, yet each row's answer holds K = 3 outputs: (2 * 20 + 1) * 3 + 20 float64s,
  // 1,144 bytes; 12 rows fit in 90 % of the server's 16 kB messages (the client's own 64 MiB
  // limit would take all 36, within the server's 40 rows).
  const streamed = await client.explainStream(multi, wide.slice(0, 36));
  assert.deepEqual(sent.chunks, [12, 12, 12]);
  assert.deepEqual(streamed.shape, [36, 20, 3]);
  const first = await client.explain(multi, wide.slice(0, 12));
  assert.deepEqual(slice(streamed.values, 0, 12 * 60), Array.from(first.values));
  // chunkRows, when given, is what is sent.
  clearSent();
  await client.explainStream(multi, wide.slice(0, 10), null, { chunkRows: 4 });
  assert.deepEqual(sent.chunks, [4, 4, 2]);
});

/**
 * Refine `rows` against `spec` with budget, recording the rows the model scores per call.
 * @param {number[][]} rowsToRefine @param {number[]} preds @param {number} budget
 */
async function refine(rowsToRefine, preds, budget) {
  /** @type {number[]} */ const calls = [];
  const answer = await client.explain(spec, rowsToRefine, preds, {
    budget,
    model: async (/** @type {number[][]} */ proposed) => {
      calls.push(proposed.length);
      return model(proposed);
    },
  });
  return { answer, calls };
}

test('refined explain chunks within the server\'s row limit and its message limit', async () => {
  await client.createContext(spec);
  // Budget 8: 46 rows' proposals (8 x 5 float64s each) fit in 90 % of 16 kB; the server takes 40.
  const byRows = await refine(query.slice(0, 100), queryPredictions.slice(0, 100), 8);
  const perRow = byRows.answer.modelRows;
  assert.ok(perRow > 0 && perRow <= 8, `${perRow}`);
  assert.deepEqual(byRows.calls, [40 * perRow, 40 * perRow, 20 * perRow]);
  // Each chunk is refined as a call of its own rows would be.
  for (const [start, stop] of [[0, 40], [40, 80], [80, 100]]) {
    const part = await refine(query.slice(start, stop), queryPredictions.slice(start, stop), 8);
    assert.deepEqual(slice(byRows.answer.values, start * 5, stop * 5), Array.from(part.answer.values));
  }
  // Budget 32: 11 rows' proposals (32 x 5 float64s each) fit in 90 % of the server's 16 kB.
  const byBytes = await refine(query.slice(0, 30), queryPredictions.slice(0, 30), 32);
  const perRow32 = byBytes.answer.modelRows;
  assert.ok(perRow32 > 8 && perRow32 <= 32, `${perRow32}`);
  assert.deepEqual(byBytes.calls, [11 * perRow32, 11 * perRow32, 8 * perRow32]);
  assert.deepEqual(byBytes.answer.shape, [30, 5]);
});

test('the whole call\'s predictions are checked before the first chunk, as explain() checks them', async () => {
  await client.createContext(spec);
  const rows30 = query.slice(0, 30);
  const cases = {
    longer: queryPredictions.slice(0, 45),
    shorter: queryPredictions.slice(0, 20),
    'two outputs, shorter': { data: new Float64Array(40).fill(0.5), shape: [20, 2] },
    'three axes': { data: new Float64Array(120).fill(0.5), shape: [30, 2, 2] },
    'empty axis': rows30.map(() => []),
  };
  for (const [name, predictions] of Object.entries(cases)) {
    const whole = await client.explain(spec, rows30, /** @type {any} */ (predictions))
      .then(() => assert.fail(`${name}: explain() took them`), (/** @type {any} */ e) => e);
    assert.ok(whole instanceof ShapleyError, `${name}: ${whole}`);
    assert.equal(whole.code, 'INVALID_ARGUMENT', name);
    assert.equal(whole.field, 'predictions', name);
    // In chunks of 15 rows, 45 predictions would lose 15 unseen, and in chunks of 20 be
    // refused for one chunk's 10 rows: the whole call is checked instead.
    const calls = {
      'chunkRows 15': () => client.explainStream(spec, rows30, /** @type {any} */ (predictions), { chunkRows: 15 }),
      'chunkRows 20': () => client.explainStream(spec, rows30, /** @type {any} */ (predictions), { chunkRows: 20 }),
      'default chunks': () => client.explainStream(spec, rows30, /** @type {any} */ (predictions)),
      refined: () => client.explain(spec, rows30, /** @type {any} */ (predictions),
        { model: (/** @type {number[][]} */ r) => model(r), budget: 8 }),
    };
    for (const [how, call] of Object.entries(calls)) {
      clearSent();
      const refused = await call().then(() => assert.fail(`${name}, ${how}: taken`), (/** @type {any} */ e) => e);
      assert.ok(refused instanceof ShapleyError, `${name}, ${how}: ${refused}`);
      assert.deepEqual([refused.code, refused.field, refused.details],
        [whole.code, whole.field, whole.details], `${name}, ${how}`);
      assert.deepEqual(sent, { chunks: [], unary: [] }, `${name}, ${how}: sent before refusing`);
    }
  }
});

test('a request over the server\'s message limit names no field from gRPC; the client names it with maxMessageBytes set to that limit', async () => {
  const { contextId } = await client.createContext(spec);
  // 500 rows of 5 float64s: 20 kB, over the server's 16 kB.
  const many = makeRows(500, 5, 45);
  // With the client's default 64 MiB it is sent, and gRPC refuses it before the service sees it.
  const unnamed = await client.explain(contextId, many).then(() => assert.fail('taken'), (/** @type {any} */ e) => e);
  assert.ok(unnamed instanceof ShapleyError, String(unnamed));
  assert.equal(unnamed.code, 'RESOURCE_EXHAUSTED', unnamed.message);
  assert.equal(unnamed.field, null);
  // Set to the server's limit, the client refuses it before sending, naming the field.
  const { limits } = await client.serverInfo();
  const matched = new ShapleyClient(server.target, { timeout: 120, maxMessageBytes: limits.maxMessageBytes });
  try {
    /**
     * @param {Promise<any>} call @param {string} field @param {RegExp} details
     */
    const named = async (call, field, details) => {
      const error = await call.then(() => assert.fail(`${field}: taken`), (/** @type {any} */ e) => e);
      assert.ok(error instanceof ShapleyError, String(error));
      assert.equal(error.code, 'RESOURCE_EXHAUSTED', error.message);
      assert.equal(error.field, field, error.message);
      assert.deepEqual(error.violations.map((/** @type {any} */ v) => v.field), [field]);
      assert.match(error.details, details);
      assert.equal(error.metadata, null, `${field}: refused by the server, not before sending`);
    };
    await named(matched.explain(contextId, many), 'rows',
      /^rows: 20000 bytes make the Explain message \d+ bytes, over maxMessageBytes \(16384\b.*explainStream/);
    // (10, 300) predictions: 24 kB, the larger field.
    const wide = { data: new Float64Array(3000).fill(0.5), shape: [10, 300] };
    await named(matched.explain(contextId, many.slice(0, 10), wide), 'predictions', /^predictions: 24000 bytes/);
    // explainStream: a chunkRows given that makes messages too large is named; the default chunks fit.
    await named(matched.explainStream(contextId, many, null, { chunkRows: 500 }), 'chunk_rows',
      /^chunk_rows: 500 rows make the ExplainStream message \d+ bytes, over maxMessageBytes \(16384\b/);
    const streamed = await matched.explainStream(contextId, many);
    assert.deepEqual(streamed.shape, [500, 5]);
    // Within the limit, as before.
    const one = await matched.explain(contextId, many.slice(0, 30));
    assert.deepEqual(one.shape, [30, 5]);
  } finally {
    matched.close();
  }
});

test('explainStream with chunkRows names the rows, not chunk_rows, when one row alone is too large; else the rows sent', async () => {
  const { contextId } = await client.createContext(spec);
  const matched = new ShapleyClient(server.target, { timeout: 120, maxMessageBytes: MESSAGE_LIMIT });
  try {
    // One row of 2,100 float64s: 16,800 bytes, over 16 KiB whatever the chunk.
    const one = [Array.from({ length: 2100 }, (_, j) => j % 7)];
    for (const options of [{ chunkRows: 5 }, { chunkRows: 1 }, {}]) {
      const error = await matched.explainStream(contextId, one, null, options)
        .catch((/** @type {any} */ e) => e);
      assert.ok(error instanceof ShapleyError, String(error));
      assert.equal(error.code, 'RESOURCE_EXHAUSTED', error.message);
      assert.equal(error.field, 'rows', `${JSON.stringify(options)}: ${error.message}`);
      assert.match(error.details, /^rows: 16800 bytes make the ExplainStream message \d+ bytes, over maxMessageBytes \(16384\b/);
      assert.equal(error.metadata, null);
    }
    // Three rows of 700 (5,600 bytes each) in chunks of 5: one message of the 3 rows sent.
    const three = Array.from({ length: 3 }, () => Array.from({ length: 700 }, (_, j) => j % 5));
    const error = await matched.explainStream(contextId, three, null, { chunkRows: 5 })
      .catch((/** @type {any} */ e) => e);
    assert.ok(error instanceof ShapleyError, String(error));
    assert.equal(error.field, 'chunk_rows', error.message);
    assert.match(error.details, /^chunk_rows: 3 rows make the ExplainStream message \d+ bytes/);
  } finally {
    matched.close();
  }
});

test('listContexts lists every held context, in pages when one message cannot hold them', async () => {
  // Five features named by 1,000 characters each: a description takes about 5.3 kB, so three
  // of these contexts do not fit in one of the server's 16 kB messages.
  const names = ['a', 'b', 'c', 'd', 'e'].map((letter) => letter.repeat(1000));
  const ids = [];
  for (let seed = 0; seed < 3; seed += 1) {
    const named = makeRows(40, 5, 100 + seed);
    const info = await client.createContext({ rows: named, predictions: model(named), featureNames: names });
    ids.push(info.contextId);
  }
  const held = (await client.serverInfo()).contextsHeld;
  clearSent();
  const whole = await client.listContexts();
  // One refused call (RESOURCE_EXHAUSTED on page_size), then pages.
  assert.ok(sent.unary.length >= 3, `calls: ${sent.unary}`);
  assert.equal(whole.contexts.length, held);
  const listed = whole.contexts.map((/** @type {any} */ c) => c.contextId);
  assert.deepEqual(listed, [...listed].sort());
  assert.equal(new Set(listed).size, held);
  for (const id of ids) assert.ok(listed.includes(id), id);
  assert.ok(whole.totalBytes > 0);
  const byOne = await client.listContexts({ pageSize: 1 });
  assert.deepEqual(byOne.contexts.map((/** @type {any} */ c) => c.contextId), listed);
  for (const pageSize of [0, -1, 1.5, '2', Number.NaN]) {
    const refused = await client.listContexts({ pageSize: /** @type {any} */ (pageSize) })
      .then(() => assert.fail(`pageSize ${String(pageSize)}: taken`), (/** @type {any} */ e) => e);
    assert.equal(refused.code, 'INVALID_ARGUMENT');
    assert.equal(refused.field, 'page_size');
  }
});
