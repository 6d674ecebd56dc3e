'use strict';
// Refinement from Node: explain() with an async scoring callback, against a real server.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { ShapleyClient, ShapleyError } = require('..');
const { startServer } = require('../testkit/server');
const { makeRows, model } = require('../testkit/data');

const rows = makeRows(200, 5, 3);
const spec = { rows, predictions: model(rows) };
const query = makeRows(12, 5, 4);
const queryPredictions = model(query);
const BUDGET = 20;

/** @type {Awaited<ReturnType<typeof startServer>>} */ let server;
/** @type {ShapleyClient} */ let client;

before(async () => {
  // A small message limit, so that a refinement of 12 rows needs several Propose/Refine pairs.
  server = await startServer({ args: ['--max-message-bytes', '8192', '--max-budget', '64'] });
  client = new ShapleyClient(server.target, { timeout: 120, maxMessageBytes: 8192 });
}, { timeout: 600_000 });

after(async () => {
  if (client) client.close();
  if (server) await server.stop();
});

/** @param {string} code @param {string} field */
function isError(code, field) {
  return (/** @type {any} */ error) => {
    assert.ok(error instanceof ShapleyError, `not a ShapleyError: ${error}`);
    assert.equal(error.code, code, error.message);
    assert.equal(error.field, field, error.message);
    return true;
  };
}

/** Sum of each row's values minus (total - base): 0 for an exactly efficient answer. */
function efficiencyGaps(/** @type {any} */ e, /** @type {number[]} */ totals) {
  const [m, d] = e.shape;
  return Array.from({ length: m }, (_, i) => {
    let sum = 0;
    for (let j = 0; j < d; j++) sum += e.values[i * d + j];
    return Math.abs(sum - (totals[i] - e.baseValues[i]));
  });
}

test('explain with an async model callback refines, in chunks, exactly efficient', async () => {
  /** @type {number[]} */ const calls = [];
  const scoring = async (/** @type {number[][]} */ proposed, /** @type {any} */ flat) => {
    assert.equal(flat.shape[0], proposed.length);
    assert.equal(flat.shape[1], 5);
    calls.push(proposed.length);
    return model(proposed);
  };
  const refined = await client.explain(spec, query, queryPredictions,
    { model: scoring, budget: BUDGET });
  const zeroShot = await client.explain(spec, query, queryPredictions);
  assert.equal(zeroShot.modelRows, 0);
  assert.ok(refined.modelRows > 0 && refined.modelRows <= BUDGET);
  assert.deepEqual(refined.shape, [12, 5]);
  // 12 rows x 20 proposed rows x 5 features x 8 bytes = 9,600 bytes: more than one message.
  assert.ok(calls.length > 1, `${calls.length} calls`);
  assert.equal(calls.reduce((a, b) => a + b, 0), 12 * refined.modelRows);
  for (const gap of efficiencyGaps(refined, queryPredictions)) assert.ok(gap < 1e-9, `${gap}`);
  assert.notDeepEqual(Array.from(refined.values), Array.from(zeroShot.values));
  // The same call proposes the same rows: the same answer, bit for bit.
  const again = await client.explain(spec, query, queryPredictions,
    { model: (/** @type {number[][]} */ r) => model(r), budget: BUDGET });
  assert.deepEqual(Array.from(again.values), Array.from(refined.values));
  const seeded = await client.explain(spec, query, queryPredictions,
    { model: (/** @type {number[][]} */ r) => model(r), budget: BUDGET, randomState: 9 });
  assert.notDeepEqual(Array.from(seeded.values), Array.from(refined.values));
});

test('without predictions the model scores the explained rows too', async () => {
  const refined = await client.explain(spec, query.slice(0, 3), null,
    { model: async (/** @type {number[][]} */ r) => Float64Array.from(model(r)), budget: 9 });
  assert.equal(refined.modelRows, 9);
  for (const gap of efficiencyGaps(refined, model(query.slice(0, 3)))) assert.ok(gap < 1e-9);
});

test('poolRows sends pool_rows with every Refine: each row learns from its chunk', async () => {
  // Columns 0 and 1 nearly copies, the model reading column 0 alone: a row's own pairs barely
  // tell them apart, the other rows' pairs do (tests/estimator/test_pooled_refinement.py).
  /** @param {number[][]} r */
  const aliasedRows = (r) => r.map((x) => [x[0], x[0] + 0.05 * x[1], x[2], x[3], x[4]]);
  /** @param {number[][]} r */
  const linear = (r) => r.map((x) => 3 * x[0] + x[2] * x[3]);
  const X = aliasedRows(makeRows(400, 5, 7));
  const aliasedSpec = { rows: X, predictions: linear(X) };
  const Q = aliasedRows(makeRows(6, 5, 8));
  const original = /** @type {any} */ (client)._unary.bind(client);
  /** @type {boolean[]} */ const sent = [];
  /** @type {any} */ (client)._unary = async (/** @type {string} */ method,
    /** @type {any} */ request, /** @type {any} */ options) => {
    if (method === 'Refine') sent.push(request.poolRows);
    return original(method, request, options);
  };
  try {
    const options = { model: linear, budget: BUDGET };
    const alone = await client.explain(aliasedSpec, Q, linear(Q), options);
    const pooled = await client.explain(aliasedSpec, Q, linear(Q), { ...options, poolRows: true });
    assert.ok(sent.length >= 2 && sent.includes(true) && sent.includes(false), `${sent}`);
    for (const gap of efficiencyGaps(pooled, linear(Q))) assert.ok(gap < 1e-9, `${gap}`);
    // The server pooled: the answer moved, toward column 0 (its whole value, 3 (x0 - mean)).
    assert.notDeepEqual(Array.from(pooled.values), Array.from(alone.values));
    const secondColumn = (/** @type {any} */ e) => Q.map((_, i) => Math.abs(e.values[i * 5 + 1]));
    const sum = (/** @type {number[]} */ v) => v.reduce((a, b) => a + b, 0);
    assert.ok(sum(secondColumn(pooled)) < sum(secondColumn(alone)),
      `${secondColumn(pooled)} vs ${secondColumn(alone)}`);
  } finally {
    /** @type {any} */ (client)._unary = original;
  }
});

test('bad refinement options and outputs are refused naming the field', async () => {
  const score = (/** @type {number[][]} */ r) => model(r);
  await assert.rejects(client.explain(spec, query, null, { poolRows: true }),
    isError('INVALID_ARGUMENT', 'pool_rows'));
  await assert.rejects(
    client.explain(spec, query, null,
      { model: score, budget: BUDGET, poolRows: /** @type {any} */ ('yes') }),
    isError('INVALID_ARGUMENT', 'pool_rows'));
  await assert.rejects(client.explainStream(spec, query, null, { poolRows: true }),
    isError('INVALID_ARGUMENT', 'pool_rows'));
  await assert.rejects(client.explain(spec, query, null, { model: score }),
    isError('INVALID_ARGUMENT', 'budget'));
  await assert.rejects(client.explain(spec, query, null, { budget: BUDGET }),
    isError('INVALID_ARGUMENT', 'model'));
  await assert.rejects(client.explain(spec, query, queryPredictions, { model: score, budget: 3 }),
    isError('INVALID_ARGUMENT', 'budget'));
  await assert.rejects(client.explain(spec, query, queryPredictions, { model: score, budget: 65 }),
    isError('INVALID_ARGUMENT', 'budget'));
  await assert.rejects(
    client.explain(spec, query, queryPredictions,
      { model: (/** @type {number[][]} */ r) => model(r).slice(1), budget: BUDGET }),
    isError('INVALID_ARGUMENT', 'outputs'),
  );
});

test('Refine is sent the sha256 Propose answered: a proposal it would not make is refused', async () => {
  // The server rebuilds the proposal; a replica of another version draws other coalitions.
  // Here the Propose answer's fingerprint is altered as such a replica's rows would alter it.
  const original = /** @type {any} */ (client)._unary.bind(client);
  /** @type {string[]} */ const proposed = [];
  /** @type {string[]} */ const sent = [];
  const recording = async (/** @type {string} */ method, /** @type {any} */ request,
    /** @type {any} */ options) => {
    if (method === 'Refine') sent.push(request.proposalSha256);
    const response = await original(method, request, options);
    if (method === 'Propose') proposed.push(response.proposalSha256);
    return response;
  };
  /** @type {any} */ (client)._unary = recording;
  try {
    await client.explain(spec, query.slice(0, 4), queryPredictions.slice(0, 4),
      { model: (/** @type {number[][]} */ r) => model(r), budget: BUDGET });
    assert.ok(proposed.length > 0);
    assert.deepEqual(sent, proposed);
    for (const digest of sent) assert.match(digest, /^[0-9a-f]{64}$/);
    /** @type {any} */ (client)._unary = async (/** @type {string} */ method,
      /** @type {any} */ request, /** @type {any} */ options) => {
      const response = await original(method, request, options);
      return method === 'Propose' ? { ...response, proposalSha256: '0'.repeat(64) } : response;
    };
    await assert.rejects(
      client.explain(spec, query.slice(0, 4), queryPredictions.slice(0, 4),
        { model: (/** @type {number[][]} */ r) => model(r), budget: BUDGET }),
      isError('INVALID_ARGUMENT', 'proposal_sha256'));
  } finally {
    /** @type {any} */ (client)._unary = original;
  }
});
