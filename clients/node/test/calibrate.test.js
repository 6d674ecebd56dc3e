'use strict';
// Calibration from Node: proposeCalibration and calibrate() with a scoring callback, against a
// real server; the calibrated context explains, streams and refines like any context and is
// re-created from the outputs the client keeps.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { ShapleyClient, ShapleyError } = require('..');
const { startServer } = require('../testkit/server');
const { makeRows, model } = require('../testkit/data');

// 60 rows, all of them background rows: every background row is paired budget // 120 times
// (2 rows a pair), so a multiple of 120 is scored whole. Budgets from 240 (two pairs per
// background row) up, well above what the server refuses.
const rows = makeRows(60, 5, 5);
const spec = { rows, predictions: model(rows) };
const query = makeRows(6, 5, 6);
const queryPredictions = model(query);
const BUDGET = 240;

/** @type {Awaited<ReturnType<typeof startServer>>} */ let server;
/** @type {ShapleyClient} */ let client;

before(async () => {
  server = await startServer();
  client = new ShapleyClient(server.target, { timeout: 120 });
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

/** A scorer that counts its calls and the rows it scored. */
function countingScorer() {
  /** @type {number[]} */ const calls = [];
  const score = async (/** @type {number[][]} */ proposed, /** @type {any} */ flat) => {
    assert.deepEqual(flat.shape, [proposed.length, 5]);
    assert.ok(flat.data instanceof Float64Array);
    calls.push(proposed.length);
    return model(proposed);
  };
  return { calls, score };
}

test('proposeCalibration: the budget rows, the same for the same arguments', async () => {
  const proposal = await client.proposeCalibration(spec, { budget: BUDGET });
  assert.equal(proposal.budget, BUDGET);
  assert.equal(proposal.shape.length, 2);
  assert.equal(proposal.shape[1], 5);
  assert.ok(proposal.shape[0] > 0 && proposal.shape[0] <= BUDGET, `${proposal.shape}`);
  assert.equal(proposal.rows.length, proposal.shape[0] * 5);
  assert.match(proposal.contextId, /^ctx-/);
  const again = await client.proposeCalibration(proposal.contextId, { budget: BUDGET });
  assert.deepEqual(Array.from(again.rows), Array.from(proposal.rows));
  const seeded = await client.proposeCalibration(spec, { budget: BUDGET, randomState: 3 });
  assert.notDeepEqual(Array.from(seeded.rows), Array.from(proposal.rows));
  // No budget: the server's default, 10 rows per background row.
  const byDefault = await client.proposeCalibration(spec);
  assert.equal(byDefault.budget, 600);
});

test('calibrate scores the proposed rows once and answers a new, efficient context', async () => {
  const base = await client.createContext(spec);
  const { calls, score } = countingScorer();
  const calibrated = await client.calibrate(spec, score, { budget: BUDGET });
  assert.deepEqual(calls, [BUDGET]);
  assert.notEqual(calibrated.contextId, base.contextId);
  assert.match(calibrated.contextId, /^ctx-/);
  assert.equal(calibrated.created, true);
  assert.equal(calibrated.calibrationRows, BUDGET);
  const diagnostics = calibrated.outputs[0].calibration;
  assert.ok(diagnostics, 'calibration diagnostics of a calibrated context');
  assert.ok(diagnostics.scale > 0, `${diagnostics.scale}`);
  assert.ok(diagnostics.gapR2Calibrated >= diagnostics.gapR2ZeroShot,
    `${diagnostics.gapR2Calibrated} < ${diagnostics.gapR2ZeroShot}`);
  // The context it came from is unchanged.
  const held = await client.getContext(base.contextId);
  assert.equal(held.calibrationRows, 0);
  assert.equal(held.outputs[0].calibration, null);
  assert.equal((await client.getContext(calibrated)).calibrationRows, BUDGET);

  const explained = await client.explain(calibrated, query, queryPredictions);
  const zeroShot = await client.explain(spec, query, queryPredictions);
  assert.equal(explained.contextId, calibrated.contextId);
  assert.equal(explained.context?.calibrationRows, BUDGET);
  assert.deepEqual(explained.shape, [6, 5]);
  for (const gap of efficiencyGaps(explained, queryPredictions)) assert.ok(gap < 1e-9, `${gap}`);
  assert.notDeepEqual(Array.from(explained.values), Array.from(zeroShot.values));

  // Streamed and refined against it too.
  const streamed = await client.explainStream(calibrated, query, queryPredictions, { chunkRows: 4 });
  assert.deepEqual(Array.from(streamed.values), Array.from(explained.values));
  const refined = await client.explain(calibrated, query, queryPredictions,
    { model: (/** @type {number[][]} */ r) => model(r), budget: 12 });
  assert.equal(refined.contextId, calibrated.contextId);
  assert.ok(refined.modelRows > 0);
  for (const gap of efficiencyGaps(refined, queryPredictions)) assert.ok(gap < 1e-9, `${gap}`);
});

test('calibrating twice with the same outputs gives the same id', async () => {
  const first = await client.calibrate(spec, (/** @type {number[][]} */ r) => model(r),
    { budget: 240, randomState: 7 });
  const base = await client.createContext(spec);
  // From the id this time, with a sync scorer returning a typed array: the same request.
  const second = await client.calibrate(base.contextId,
    (/** @type {number[][]} */ r) => Float64Array.from(model(r)), { budget: 240, randomState: 7 });
  assert.equal(second.contextId, first.contextId);
  assert.equal(second.created, false);
  const other = await client.calibrate(spec,
    (/** @type {number[][]} */ r) => model(r).map((p) => 0.5 * p + 0.25),
    { budget: 240, randomState: 7 });
  assert.notEqual(other.contextId, first.contextId);
});

test('a lost calibrated context is re-created with the same id without calling the scorer', async () => {
  const base = await client.createContext(spec);
  const { calls, score } = countingScorer();
  const calibrated = await client.calibrate(spec, score, { budget: 360, randomState: 11 });
  const id = calibrated.contextId;
  const before = await client.explain(calibrated, query, queryPredictions);
  await client.deleteContext(calibrated);
  await client.deleteContext(base.contextId);
  await assert.rejects(client.getContext(id), isError('NOT_FOUND', 'context_id'));

  const after = await client.explain(calibrated, query, queryPredictions);
  assert.deepEqual(calls, [360]);
  assert.equal(calibrated.contextId, id);
  assert.equal(after.contextId, id);
  assert.deepEqual(Array.from(after.values), Array.from(before.values));
  assert.equal((await client.getContext(base.contextId)).calibrationRows, 0);

  // Only the calibrated context lost: Calibrate against the base the server still holds.
  await client.deleteContext(calibrated);
  const streamed = await client.explainStream(calibrated, query, queryPredictions);
  assert.equal(streamed.contextId, id);
  assert.deepEqual(Array.from(streamed.values), Array.from(before.values));
  assert.deepEqual(calls, [360]);

  // A calibrated context of a calibrated one: both re-created, the outer one from the inner.
  const twice = await client.calibrate(calibrated, (/** @type {number[][]} */ r) => model(r),
    { budget: 360 });
  const answer = await client.explain(twice, query, queryPredictions);
  await client.deleteContext(twice);
  await client.deleteContext(calibrated);
  await client.deleteContext(base.contextId);
  const recreated = await client.explain(twice, query, queryPredictions);
  assert.equal(recreated.contextId, twice.contextId);
  assert.deepEqual(Array.from(recreated.values), Array.from(answer.values));
});

test('bad calibration arguments and outputs are refused naming the field', async () => {
  const score = (/** @type {number[][]} */ r) => model(r);
  // Refused before sending.
  await assert.rejects(client.calibrate(spec, /** @type {any} */ ('not a model')),
    isError('INVALID_ARGUMENT', 'score'));
  await assert.rejects(client.calibrate(spec, score, { budget: /** @type {any} */ ('200') }),
    isError('INVALID_ARGUMENT', 'budget'));
  await assert.rejects(client.calibrate(spec, score, { budget: 150.5 }),
    isError('INVALID_ARGUMENT', 'budget'));
  await assert.rejects(client.proposeCalibration(spec, { budget: -1 }),
    isError('INVALID_ARGUMENT', 'budget'));
  await assert.rejects(client.calibrate(spec, score, { budget: BUDGET, randomState: -1 }),
    isError('INVALID_ARGUMENT', 'random_state'));
  // Refused by the server: under 2 rows per background row (less than it takes); 2^32 as a seed.
  const { calls, score: counting } = countingScorer();
  await assert.rejects(client.calibrate(spec, counting, { budget: 100 }),
    isError('INVALID_ARGUMENT', 'budget'));
  assert.deepEqual(calls, []);
  await assert.rejects(client.calibrate(spec, score, { budget: BUDGET, randomState: 2 ** 32 }),
    isError('INVALID_ARGUMENT', 'random_state'));
  // The wrong number of outputs, and outputs that are not numbers.
  await assert.rejects(
    client.calibrate(spec, (/** @type {number[][]} */ r) => model(r).slice(1), { budget: BUDGET }),
    isError('INVALID_ARGUMENT', 'outputs'),
  );
  await assert.rejects(
    client.calibrate(spec, (/** @type {number[][]} */ r) => r.map(() => 'x'), { budget: BUDGET }),
    isError('INVALID_ARGUMENT', 'outputs'),
  );
  // An id alone the server does not hold.
  await assert.rejects(client.calibrate(`ctx-${'0'.repeat(40)}`, score),
    isError('NOT_FOUND', 'context_id'));
});
