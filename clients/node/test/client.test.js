'use strict';
// Against a real shapley-svc server (see testkit/server.js for how it is found and started).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { ShapleyClient, ShapleyError, Explanation } = require('..');
const { startServer } = require('../testkit/server');
const { makeRows, model, sigmoid } = require('../testkit/data');

const NAMES = ['age', 'income', 'debt', 'tenure', 'noise'];
const rows = makeRows(300, 5, 1);
const predictions = model(rows);
/** The spec object explain() gets directly: the client creates and caches its context. */
const spec = { rows, predictions, featureNames: NAMES, randomState: 7 };
const query = makeRows(40, 5, 2);
const queryPredictions = model(query);

/** @type {Awaited<ReturnType<typeof startServer>>} */ let server;
/** @type {ShapleyClient} */ let client;
/** @type {any} */ let info;

before(async () => {
  server = await startServer();
  client = new ShapleyClient(server.target, { timeout: 120 });
}, { timeout: 600_000 });

after(async () => {
  if (client) client.close();
  if (server) await server.stop();
});

/** @param {Explanation} e @param {number[]} preds */
function assertEfficient(e, preds) {
  const [m, d] = e.shape;
  for (let i = 0; i < m; i++) {
    let sum = 0;
    for (let j = 0; j < d; j++) sum += e.values[i * d + j];
    const gap = Math.abs(sum - (preds[i] - e.baseValues[i]));
    assert.ok(gap < 1e-9, `row ${i}: sum of values ${sum} != ${preds[i]} - ${e.baseValues[i]} (gap ${gap})`);
  }
}

/** @param {string} code @param {string | null} [field] @param {RegExp} [details] */
function isError(code, field, details) {
  return (/** @type {any} */ error) => {
    assert.ok(error instanceof ShapleyError, `not a ShapleyError: ${error}`);
    assert.equal(error.code, code, error.message);
    if (field !== undefined) assert.equal(error.field, field);
    if (details) assert.match(error.details, details);
    return true;
  };
}

test('serverInfo returns the version, the artifact and the limits; health is SERVING', async () => {
  const serverInfo = await client.serverInfo();
  assert.equal(typeof serverInfo.version, 'string');
  assert.match(serverInfo.artifactVersion, /^\d+:[0-9a-f]+$/);
  assert.match(serverInfo.artifactSha256, /^[0-9a-f]{64}$/);
  for (const key of ['maxMessageBytes', 'maxContextRows', 'maxFeatures', 'maxOutputs',
    'maxExplainRows', 'maxContexts', 'maxContextStoreBytes', 'maxConcurrentStreams']) {
    assert.equal(typeof serverInfo.limits[key], 'number', key);
    assert.ok(serverInfo.limits[key] > 0, key);
  }
  assert.equal(await client.health(), 'SERVING');
  assert.equal(await client.health('shapley.v1.Shapley'), 'SERVING');
});

test('createContext, then explain with predictions: every row is exactly efficient', async () => {
  info = await client.createContext(spec);
  assert.match(info.contextId, /^ctx-[0-9a-f]+$/);
  assert.equal(info.nRows, 300);
  assert.equal(info.nFeatures, 5);
  assert.equal(info.nOutputs, 1);
  assert.equal(info.singleOutput, true);
  assert.deepEqual(info.featureNames, NAMES);
  assert.equal(info.outputs.length, 1);
  assert.ok(info.outputs[0].surrogates.length > 0);

  const e = await client.explain(info.contextId, query, queryPredictions);
  assert.ok(e instanceof Explanation);
  assert.equal(e.contextId, info.contextId);
  assert.deepEqual(e.shape, [40, 5]);
  assert.deepEqual(e.baseShape, [40]);
  assert.ok(e.values instanceof Float64Array && e.values.length === 200);
  assert.ok(e.uncertainty instanceof Float64Array && e.uncertainty.length === 200);
  assert.ok(e.baseValues instanceof Float64Array && e.baseValues.length === 40);
  assert.deepEqual(e.featureNames, NAMES);
  assert.equal(e.singleOutput, true);
  assertEfficient(e, queryPredictions);
  for (const u of e.uncertainty) assert.ok(u >= 0 && Number.isFinite(u));

  const nested = e.toNested();
  assert.equal(nested.values.length, 40);
  assert.deepEqual(nested.values[3], Array.from(e.values.subarray(15, 20)));
  assert.deepEqual(e.row(3), {
    values: nested.values[3], uncertainty: nested.uncertainty[3], baseValue: nested.baseValues[3],
  });
  // Without predictions the answer is still there, just not pinned to them.
  const loose = await client.explain(info, query.slice(0, 5));
  assert.deepEqual(loose.shape, [5, 5]);
});

test('the same data gives the same context id (nested arrays, copies or {data, shape})', async () => {
  const copy = {
    rows: rows.map((r) => r.slice()), predictions: predictions.slice(), featureNames: NAMES.slice(),
    randomState: 7,
  };
  const again = await client.createContext(copy);
  assert.equal(again.contextId, info.contextId);
  assert.equal(again.created, false);
  const flat = {
    rows: { data: Float64Array.from(rows.flat()), shape: [300, 5] },
    predictions: Float64Array.from(predictions),
    featureNames: NAMES,
    randomState: 7n,
  };
  const viaFlat = await client.createContext(flat);
  assert.equal(viaFlat.contextId, info.contextId);
  assert.equal(viaFlat.created, false);
  // A spec already created costs explain() no CreateContext round trip.
  const e = await client.explain(flat, query.slice(0, 2), queryPredictions.slice(0, 2));
  assert.equal(e.contextId, info.contextId);
});

test('explainStream of 2,500 rows in chunks of 1,000 equals the unary explain', async () => {
  const batch = makeRows(2500, 5, 3);
  const batchPredictions = model(batch);
  const unary = await client.explain(info.contextId, batch, batchPredictions);
  const streamed = await client.explainStream(info.contextId, batch, batchPredictions, { chunkRows: 1000 });
  assert.equal(streamed.contextId, info.contextId);
  assert.deepEqual(streamed.shape, [2500, 5]);
  assert.deepEqual(streamed.baseShape, [2500]);
  assert.deepEqual(streamed.featureNames, NAMES);
  assert.deepEqual(streamed.values, unary.values);
  assert.deepEqual(streamed.baseValues, unary.baseValues);
  assert.deepEqual(streamed.uncertainty, unary.uncertainty);
  assertEfficient(streamed, batchPredictions);

  // Many small chunks (more than the stream's write buffer holds): still in order.
  const many = await client.explainStream(info.contextId, batch.slice(0, 1000), batchPredictions.slice(0, 1000), { chunkRows: 20 });
  assert.deepEqual(many.values, unary.values.subarray(0, 5000));
  assert.deepEqual(many.baseValues, unary.baseValues.subarray(0, 1000));

  // {data, shape} input, no predictions, float32 answers, uneven chunks.
  const flat = { data: Float64Array.from(batch.slice(0, 250).flat()), shape: [250, 5] };
  const small = await client.explainStream(info.contextId, flat, null, { chunkRows: 97, outputDtype: 'float32' });
  assert.ok(small.values instanceof Float32Array);
  assert.deepEqual(small.shape, [250, 5]);
});

test('a feature-count mismatch is INVALID_ARGUMENT naming the field', async () => {
  await assert.rejects(
    client.explain(info.contextId, makeRows(3, 4, 4)),
    isError('INVALID_ARGUMENT', 'rows', /^rows: has 4 features; context ctx-[0-9a-f]+ has 5$/),
  );
  await assert.rejects(
    client.explainStream(info.contextId, makeRows(30, 4, 4), null, { chunkRows: 10 }),
    isError('INVALID_ARGUMENT', 'rows', /^rows: has 4 features/),
  );
  await assert.rejects(
    client.explain(info.contextId, query.slice(0, 3), [0.5, 0.5]),
    isError('INVALID_ARGUMENT', 'predictions', /^predictions: /),
  );
  await assert.rejects(
    client.createContext({ rows: rows.slice(0, 10), predictions: predictions.slice(0, 9) }),
    isError('INVALID_ARGUMENT', 'context.predictions'),
  );
  const error = await client.explain(info.contextId, [[1, 2]]).catch((e) => e);
  assert.equal(error.grpcCode, 3);
  assert.match(error.message, /^INVALID_ARGUMENT: rows: /);
});

test('arrays are checked before anything is sent', async () => {
  await assert.rejects(client.explain(info.contextId, [[1, 2, 3, 4, 5], [1, 2]]),
    isError('INVALID_ARGUMENT', 'rows', /row 1 has 2 entries/));
  await assert.rejects(client.explain(info.contextId, { data: new Float64Array(7), shape: [2, 5] }),
    isError('INVALID_ARGUMENT', 'rows', /needs 10 values/));
  await assert.rejects(client.explain(info.contextId, [1, 2, 3, 4, 5]),
    isError('INVALID_ARGUMENT', 'rows', /must be 2-D/));
});

test('groups: one exactly efficient value per group, named by the groups', async () => {
  const groups = { person: [0, 3], money: [1, 2], other: [4] };
  const grouped = await client.createContext({ rows, predictions, featureNames: NAMES, groups });
  assert.deepEqual(grouped.attributionNames, ['person', 'money', 'other']);
  assert.deepEqual(grouped.groups.map((g) => g.name), ['person', 'money', 'other']);
  const e = await client.explain(grouped.contextId, query, queryPredictions);
  assert.deepEqual(e.shape, [40, 3]);
  assert.deepEqual(e.featureNames, ['person', 'money', 'other']);
  assertEfficient(e, queryPredictions);
  await assert.rejects(
    client.createContext({ rows, predictions, groups: { a: [0, 1], b: [1, 2, 3, 4] } }),
    isError('INVALID_ARGUMENT', 'context.groups', /column 1 is in both 'a' and 'b'/),
  );
});

test('an unknown context id is NOT_FOUND', async () => {
  const unknown = 'ctx-0000000000000000000000000000000000000000';
  await assert.rejects(client.getContext(unknown), isError('NOT_FOUND', 'context_id', /is not held/));
  await assert.rejects(client.explain(unknown, query), isError('NOT_FOUND', 'context_id'));
  await assert.rejects(client.explainStream(unknown, query), isError('NOT_FOUND', 'context_id'));
  await assert.rejects(client.deleteContext(unknown), isError('NOT_FOUND', 'context_id'));
});

test('explain with a spec re-creates the context transparently after deleteContext', async () => {
  const deleted = await client.deleteContext(info.contextId);
  assert.equal(deleted.contextId, info.contextId);
  assert.ok(deleted.freedBytes > 0);
  await assert.rejects(client.getContext(info.contextId), isError('NOT_FOUND'));

  const e = await client.explain(spec, query, queryPredictions);
  assert.equal(e.contextId, info.contextId);
  assertEfficient(e, queryPredictions);
  const held = await client.getContext(info.contextId);
  assert.equal(held.nRows, 300);
  const listed = await client.listContexts();
  assert.ok(listed.contexts.some((c) => c.contextId === info.contextId));
  assert.ok(listed.totalBytes > 0);

  // By id there is nothing to re-create from: NOT_FOUND stays NOT_FOUND.
  await client.deleteContext(info.contextId);
  await assert.rejects(client.explain(info.contextId, query), isError('NOT_FOUND'));
  // ExplainStream re-creates the same way.
  const streamed = await client.explainStream(spec, query, queryPredictions, { chunkRows: 16 });
  assert.equal(streamed.contextId, info.contextId);
  assert.deepEqual(streamed.values, e.values);
});

test('multi-output contexts answer (m, d, K)', async () => {
  const few = makeRows(120, 3, 5);
  const two = few.map((x) => [sigmoid(x[0] - x[1]), 2 * x[2] + x[0]]);
  const q = makeRows(4, 3, 6);
  const qTwo = q.map((x) => [sigmoid(x[0] - x[1]), 2 * x[2] + x[0]]);
  const multi = { rows: few, predictions: two };
  // Concurrent first uses of one spec share a single CreateContext.
  let creates = 0;
  const unary = client._unary.bind(client);
  client._unary = (method, ...rest) => {
    if (method === 'CreateContext') creates += 1;
    return unary(method, ...rest);
  };
  let e;
  try {
    [e] = await Promise.all([client.explain(multi, q, qTwo), client.explainStream(multi, q, null, { chunkRows: 3 })]);
  } finally {
    delete client._unary;
  }
  assert.equal(creates, 1);
  assert.deepEqual(e.shape, [4, 3, 2]);
  assert.deepEqual(e.baseShape, [4, 2]);
  assert.equal(e.singleOutput, false);
  assert.deepEqual(e.featureNames, ['x0', 'x1', 'x2']);
  for (let i = 0; i < 4; i++) {
    const { values, baseValue } = e.row(i);
    assert.equal(values.length, 3);
    for (let k = 0; k < 2; k++) {
      const sum = values.reduce((s, v) => s + v[k], 0);
      assert.ok(Math.abs(sum - (qTwo[i][k] - baseValue[k])) < 1e-9, `row ${i} output ${k}`);
    }
  }
});

test('a per-call timeout becomes a gRPC deadline', async () => {
  await assert.rejects(client.serverInfo({ timeout: 1e-6 }), isError('DEADLINE_EXCEEDED', null));
});
