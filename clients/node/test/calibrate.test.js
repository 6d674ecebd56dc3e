'use strict';
// Calibration from Node: proposeCalibration and calibrate() with a scoring callback, against a
// real server; the calibrated context explains, streams and refines like any context and is
// re-created from the outputs the client keeps. Calibrating a spec refits the surrogates (the spec
// sent along); an id, a calibrated context or refit: false refits their weights only.
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
  // No budget: the server's default, 10 rows per background row; 20 sized for a refit.
  const byDefault = await client.proposeCalibration(spec);
  assert.equal(byDefault.budget, 600);
  const forRefit = await client.proposeCalibration(spec, { refit: true });
  assert.equal(forRefit.budget, 1200);
  assert.ok(forRefit.shape[0] > byDefault.shape[0] && forRefit.shape[0] <= 1200, `${forRefit.shape}`);
});

test('calibrate: a refit scores the refit\'s default budget, the weights alone their own', async () => {
  const refitted = countingScorer();
  const byRefit = await client.calibrate(spec, refitted.score);
  assert.deepEqual(refitted.calls, [1200]);
  assert.equal(byRefit.calibrationRefitted, true);
  assert.equal(byRefit.calibrationRows, 1200);
  const weighed = countingScorer();
  const byWeights = await client.calibrate(spec, weighed.score, { refit: false });
  assert.deepEqual(weighed.calls, [600]);
  assert.equal(byWeights.calibrationRefitted, false);
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
  assert.equal(calibrated.calibrationRefitted, true); // a spec: sent along, the surrogates refitted
  const diagnostics = calibrated.outputs[0].calibration;
  assert.ok(diagnostics, 'calibration diagnostics of a calibrated context');
  assert.ok(diagnostics.scale > 0, `${diagnostics.scale}`);
  assert.ok(diagnostics.gapR2Calibrated >= diagnostics.gapR2ZeroShot,
    `${diagnostics.gapR2Calibrated} < ${diagnostics.gapR2ZeroShot}`);
  // The context it came from is unchanged.
  const held = await client.getContext(base.contextId);
  assert.equal(held.calibrationRows, 0);
  assert.equal(held.calibrationRefitted, false);
  assert.equal(held.outputs[0].calibration, null);
  const info = await client.getContext(calibrated);
  assert.equal(info.calibrationRows, BUDGET);
  assert.equal(info.calibrationRefitted, true);

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
    { budget: 240, randomState: 7, refit: false });
  assert.equal(first.calibrationRefitted, false);
  const base = await client.createContext(spec);
  // From the id this time (weights only: an id carries no data), with a sync scorer returning
  // a typed array: the same request.
  const second = await client.calibrate(base.contextId,
    (/** @type {number[][]} */ r) => Float64Array.from(model(r)), { budget: 240, randomState: 7 });
  assert.equal(second.contextId, first.contextId);
  assert.equal(second.created, false);
  assert.equal(second.calibrationRefitted, false);
  const other = await client.calibrate(spec,
    (/** @type {number[][]} */ r) => model(r).map((p) => 0.5 * p + 0.25),
    { budget: 240, randomState: 7, refit: false });
  assert.notEqual(other.contextId, first.contextId);
  // Refitted (the spec's default): another context, the same again for the same outputs.
  const refitted = await client.calibrate(spec, (/** @type {number[][]} */ r) => model(r),
    { budget: 240, randomState: 7 });
  assert.equal(refitted.calibrationRefitted, true);
  assert.notEqual(refitted.contextId, first.contextId);
  const again = await client.calibrate(spec, (/** @type {number[][]} */ r) => model(r),
    { budget: 240, randomState: 7, refit: true });
  assert.equal(again.contextId, refitted.contextId);
  assert.equal(again.created, false);
});

test('refit: by default when the context is a spec that fits in one message, else weights only', async () => {
  const score = (/** @type {number[][]} */ r) => model(r);
  const options = { budget: BUDGET, randomState: 13 };
  const refitted = await client.calibrate(spec, score, options);
  assert.equal(refitted.calibrationRefitted, true);
  const weightsOnly = await client.calibrate(spec, score, { ...options, refit: false });
  assert.equal(weightsOnly.calibrationRefitted, false);
  assert.equal(weightsOnly.calibrationRows, BUDGET);
  assert.notEqual(weightsOnly.contextId, refitted.contextId);
  const byId = await client.calibrate((await client.createContext(spec)).contextId, score, options);
  assert.equal(byId.calibrationRefitted, false);
  assert.equal(byId.contextId, weightsOnly.contextId);
  // Differently refitted, differently explained; both exactly efficient.
  const a = await client.explain(refitted, query, queryPredictions);
  const b = await client.explain(weightsOnly, query, queryPredictions);
  assert.notDeepEqual(Array.from(a.values), Array.from(b.values));
  for (const gap of efficiencyGaps(a, queryPredictions)) assert.ok(gap < 1e-9, `${gap}`);

  // A calibrated context carries no spec of its own: weights only, sent without the spec. The
  // members it keeps were refitted: calibrationRefitted stays true, and calibrationRows counts
  // both calibrations.
  let sentSpec = null;
  const unary = /** @type {any} */ (client)._unary.bind(client);
  /** @type {any} */ (client)._unary = (/** @type {string} */ method, /** @type {any} */ request,
    /** @type {any[]} */ ...rest) => {
    if (method === 'Calibrate') sentSpec = request.context ?? null;
    return unary(method, request, ...rest);
  };
  let twice;
  try {
    twice = await client.calibrate(refitted, score, { budget: BUDGET });
  } finally {
    delete (/** @type {any} */ (client))._unary;
  }
  assert.equal(sentSpec, null);
  assert.equal(twice.calibrationRefitted, true);
  assert.equal(twice.calibrationRows, refitted.calibrationRows + BUDGET);

  // The spec and the outputs past one message (60 x 5 rows fit alone, not with 240 outputs):
  // weights only, or refused when refit is asked for.
  const small = new ShapleyClient(server.target, { timeout: 120, maxMessageBytes: 4500 });
  try {
    const auto = await small.calibrate(spec, score, options);
    assert.equal(auto.calibrationRefitted, false);
    assert.equal(auto.contextId, weightsOnly.contextId);
    await assert.rejects(small.calibrate(spec, score, { ...options, refit: true }),
      (/** @type {any} */ error) => isError('INVALID_ARGUMENT', 'refit')(error)
        && /refit: false/.test(error.message));
  } finally {
    small.close();
  }

  // refit: true without the data, and a refit that is not a boolean: refused before sending,
  // the model not called.
  const { calls, score: counting } = countingScorer();
  await assert.rejects(client.calibrate(refitted.contextId, counting, { refit: true }),
    (/** @type {any} */ error) => isError('INVALID_ARGUMENT', 'refit')(error)
      && /spec/.test(error.message));
  await assert.rejects(client.calibrate(refitted, counting, { refit: true }),
    isError('INVALID_ARGUMENT', 'refit'));
  await assert.rejects(client.calibrate(spec, counting, { refit: /** @type {any} */ ('yes') }),
    isError('INVALID_ARGUMENT', 'refit'));
  assert.deepEqual(calls, []);
});

test('refit: by default only within the server\'s largest context, refused past it', async () => {
  // 60 context rows and 240 scored rows: 300 rows to refit, over a limit of 200.
  const limited = await startServer({ args: ['--max-context-rows', '200'] });
  const small = new ShapleyClient(limited.target, { timeout: 120 });
  try {
    const score = (/** @type {number[][]} */ r) => model(r);
    const auto = await small.calibrate(spec, score, { budget: BUDGET });
    assert.equal(auto.calibrationRefitted, false);
    // Refused as the server refuses it, before the model runs.
    const refused = countingScorer();
    await assert.rejects(small.calibrate(spec, refused.score, { budget: BUDGET, refit: true }),
      (/** @type {any} */ error) => isError('RESOURCE_EXHAUSTED', 'budget')(error)
        && /300 in all; the limit is 200\b.*refit: false.*a budget of at most 140$/.test(error.message));
    assert.deepEqual(refused.calls, []);
  } finally {
    small.close();
    await limited.stop();
  }
});

test('refit: past the largest context on the refit\'s default budget, on the weights\' default', async () => {
  // 60 context rows: 60 + 1,200 rows over a limit of 1,000, 60 + 600 within it.
  const limited = await startServer({ args: ['--max-context-rows', '1000'] });
  const small = new ShapleyClient(limited.target, { timeout: 120 });
  try {
    for (const options of [{}, { refit: true }]) {
      const { calls, score } = countingScorer();
      const calibrated = await small.calibrate(spec, score, options);
      assert.deepEqual(calls, [600]);
      assert.equal(calibrated.calibrationRefitted, true);
    }
  } finally {
    small.close();
    await limited.stop();
  }
});

test('refit: decided before the model runs on a streamed spec: the weights\' default budget', async () => {
  // 500 x 4 rows and their predictions: 20 kB, streamed by a client that sends at most 10 kB
  // (blocks of rows). Such a spec cannot go along with the outputs: the weights only, on their
  // default budget (10 rows per background row, 1,000), not the refit's (2,000), as the Python
  // client decides: the same call gives the same id from both.
  const wide = makeRows(500, 4, 21);
  const streamedSpec = { rows: wide, predictions: model(wide) };
  const small = new ShapleyClient(server.target, { timeout: 120, maxMessageBytes: 10_000 });
  try {
    const { calls, score } = countingScorer4();
    const calibrated = await small.calibrate(streamedSpec, score);
    assert.deepEqual(calls, [1000]);
    assert.equal(calibrated.calibrationRows, 1000);
    assert.equal(calibrated.calibrationRefitted, false);
    const weights = await small.calibrate(streamedSpec, (/** @type {number[][]} */ r) => model(r),
      { refit: false });
    assert.equal(weights.contextId, calibrated.contextId);
    assert.equal(weights.created, false);
    // refit: true is refused before the model runs.
    const refused = countingScorer4();
    await assert.rejects(small.calibrate(streamedSpec, refused.score, { refit: true }),
      (/** @type {any} */ error) => isError('INVALID_ARGUMENT', 'refit')(error)
        && /do not fit in one 10000-byte message/.test(error.message));
    assert.deepEqual(refused.calls, []);
  } finally {
    small.close();
  }
});

/** A scorer of (rows, 4) arrays that counts its calls and the rows it scored. */
function countingScorer4() {
  /** @type {number[]} */ const calls = [];
  const score = (/** @type {number[][]} */ proposed) => {
    calls.push(proposed.length);
    return model(proposed);
  };
  return { calls, score };
}

// A server whose messages (20,000 bytes) cannot carry the refit's default proposal of 2 x 100
// background rows x 20 (2,000 rows of 2 features: 32 kB), and whose largest context is 1,340
// rows; started on first use, by the tests below.
/** @type {Promise<Awaited<ReturnType<typeof startServer>>> | null} */ let narrowServer = null;
const narrow = () => {
  narrowServer ??= startServer({ args: ['--max-message-bytes', '20000', '--max-context-rows', '1340'] });
  return narrowServer;
};
after(async () => {
  if (narrowServer) await (await narrowServer).stop();
});

/** An exact model of (rows, 2) arrays (the same bits from any client) that counts its calls. */
function countingLinear() {
  /** @type {number[]} */ const calls = [];
  const score = (/** @type {number[][]} */ proposed) => {
    calls.push(proposed.length);
    return proposed.map((x) => 2 * x[0] - x[1]);
  };
  return { calls, score };
}

/** @param {number} n @param {number} seed */
function linearSpec(n, seed) {
  const xs = makeRows(n, 2, seed);
  return { rows: xs, predictions: xs.map((x) => 2 * x[0] - x[1]) };
}

test('refit: where the server cannot carry the refit\'s default proposal, a refit on the weights\' default', async () => {
  const limited = await narrow();
  const small = new ShapleyClient(limited.target, { timeout: 120, maxMessageBytes: 20_000 });
  try {
    // 300 rows: 300 + 1,000 within 1,340 rows, and the spec with 1,000 outputs within a message.
    const own = linearSpec(300, 22);
    const ids = [];
    for (const refit of [undefined, true]) {
      const { calls, score } = countingLinear();
      const calibrated = await small.calibrate(own, score, { refit });
      assert.deepEqual(calls, [1000], `refit ${refit}`);
      assert.equal(calibrated.calibrationRefitted, true, `refit ${refit}`);
      ids.push(calibrated.contextId);
    }
    // The same calibration as a refit asked for on that budget.
    const explicit = await small.calibrate(own, countingLinear().score, { refit: true, budget: 1000 });
    assert.deepEqual(ids, [explicit.contextId, explicit.contextId]);
    // A budget given is the caller's: the server's refusal of it stands.
    await assert.rejects(small.calibrate(own, countingLinear().score, { budget: 2000 }),
      isError('RESOURCE_EXHAUSTED', 'budget'));
  } finally {
    small.close();
  }
});

test('refit: with a budget given, its rows are counted against maxContextRows as the server counts them', async () => {
  const limited = await narrow();
  const small = new ShapleyClient(limited.target, { timeout: 120, maxMessageBytes: 20_000 });
  try {
    // 300 context rows and a budget of 1,050: 1,350 rows to refit, over 1,340, though the
    // proposal holds fewer rows than the budget.
    const own = linearSpec(300, 23);
    const proposal = await small.proposeCalibration(own, { budget: 1050 });
    assert.ok(300 + proposal.shape[0] <= 1340, `${proposal.shape}`);
    const { calls, score } = countingLinear();
    const calibrated = await small.calibrate(own, score, { budget: 1050 });
    assert.deepEqual(calls, [proposal.shape[0]]);
    assert.equal(calibrated.calibrationRefitted, false);
    const weights = await small.calibrate(own, countingLinear().score, { budget: 1050, refit: false });
    assert.equal(weights.contextId, calibrated.contextId);
  } finally {
    small.close();
  }
});

test('refit: sized against the server\'s message limit too, not only maxMessageBytes', async () => {
  const limited = await narrow();
  // maxMessageBytes left at 64 MiB: the server's 20,000 bytes is the smaller limit.
  const roomy = new ShapleyClient(limited.target, { timeout: 120 });
  try {
    // 700 x 2 rows and their predictions (16.8 kB) fit one CreateContext of the server's; with
    // 600 outputs (4.8 kB) they do not fit one Calibrate: weights only.
    const own = linearSpec(700, 24);
    const { calls, score } = countingLinear();
    const calibrated = await roomy.calibrate(own, score, { budget: 600 });
    assert.equal(calls.length, 1);
    assert.equal(calibrated.calibrationRefitted, false);
    const weights = await roomy.calibrate(own, countingLinear().score, { budget: 600, refit: false });
    assert.equal(weights.contextId, calibrated.contextId);
    // refit: true is refused before the model runs, naming the server's limit.
    const refused = countingLinear();
    await assert.rejects(roomy.calibrate(own, refused.score, { budget: 600, refit: true }),
      (/** @type {any} */ error) => isError('INVALID_ARGUMENT', 'refit')(error)
        && /do not fit in one 20000-byte message/.test(error.message));
    assert.deepEqual(refused.calls, []);
  } finally {
    roomy.close();
  }
});

test('a lost calibrated context is re-created with the same id without calling the scorer', async () => {
  const base = await client.createContext(spec);
  const { calls, score } = countingScorer();
  const calibrated = await client.calibrate(spec, score, { budget: 360, randomState: 11 });
  assert.equal(calibrated.calibrationRefitted, true);
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
  // Refitted again: the spec was kept with the outputs.
  assert.equal((await client.getContext(id)).calibrationRefitted, true);
  assert.equal(calibrated.calibrationRefitted, true);

  // Only the calibrated context lost: Calibrate against the base the server still holds.
  await client.deleteContext(calibrated);
  const streamed = await client.explainStream(calibrated, query, queryPredictions);
  assert.equal(streamed.contextId, id);
  assert.deepEqual(Array.from(streamed.values), Array.from(before.values));
  assert.deepEqual(calls, [360]);

  // A calibrated context of a calibrated one: both re-created, the outer one from the inner.
  const twice = await client.calibrate(calibrated, (/** @type {number[][]} */ r) => model(r),
    { budget: 360 });
  // Weights only, of a refitted context: its refitted members are kept, and so is the flag.
  assert.equal(twice.calibrationRefitted, true);
  assert.equal(twice.calibrationRows, 720);
  const answer = await client.explain(twice, query, queryPredictions);
  await client.deleteContext(twice);
  await client.deleteContext(calibrated);
  await client.deleteContext(base.contextId);
  const recreated = await client.explain(twice, query, queryPredictions);
  assert.equal(recreated.contextId, twice.contextId);
  assert.deepEqual(Array.from(recreated.values), Array.from(answer.values));
});

test('getContext re-creates a lost calibrated context or spec, as explain does; an id stays NOT_FOUND', async () => {
  const own = { rows: makeRows(60, 5, 17), predictions: model(makeRows(60, 5, 17)) };
  const { calls, score } = countingScorer();
  const calibrated = await client.calibrate(own, score, { budget: BUDGET, refit: false });
  const id = calibrated.contextId;
  await client.deleteContext(calibrated);
  // By id, or by an object that carries only an id: nothing to re-create from.
  await assert.rejects(client.getContext(id), isError('NOT_FOUND', 'context_id'));
  await assert.rejects(client.getContext({ contextId: id }), isError('NOT_FOUND', 'context_id'));
  // The calibrated context itself: Calibrate sent again with the outputs kept, the model not called.
  const info = await client.getContext(calibrated);
  assert.equal(info.contextId, id);
  assert.equal(info.calibrationRows, BUDGET);
  assert.equal(info.calibrationRefitted, false);
  assert.equal('created' in info, false);
  assert.deepEqual(calls, [BUDGET]);
  assert.equal((await client.getContext(id)).contextId, id);

  // The context it came from lost too: created again from its spec first, then calibrated.
  const baseId = (await client.getContext(own)).contextId;
  for (const lost of [id, baseId]) await client.deleteContext(lost);
  await assert.rejects(client.getContext(baseId), isError('NOT_FOUND', 'context_id'));
  assert.equal((await client.getContext(calibrated)).contextId, id);
  assert.equal((await client.getContext(baseId)).contextId, baseId);
  assert.deepEqual(calls, [BUDGET]);

  // A spec alone: created on first use, re-created when lost.
  const fresh = { rows: makeRows(50, 5, 18), predictions: model(makeRows(50, 5, 18)) };
  const created = await client.getContext(fresh);
  assert.equal(created.nRows, 50);
  await client.deleteContext(created.contextId);
  assert.equal((await client.getContext(fresh)).contextId, created.contextId);
});

test('bad calibration arguments and outputs are refused naming the field', async () => {
  const score = (/** @type {number[][]} */ r) => model(r);
  // Refused before sending.
  await assert.rejects(client.calibrate(spec, /** @type {any} */ ('not a model')),
    isError('INVALID_ARGUMENT', 'model'));
  await assert.rejects(client.calibrate(spec, score, { budget: /** @type {any} */ ('200') }),
    isError('INVALID_ARGUMENT', 'budget'));
  await assert.rejects(client.calibrate(spec, score, { budget: 150.5 }),
    isError('INVALID_ARGUMENT', 'budget'));
  await assert.rejects(client.proposeCalibration(spec, { budget: -1 }),
    isError('INVALID_ARGUMENT', 'budget'));
  // proposeCalibration took anything but true as false (the weights' default budget), where
  // calibrate refused it.
  for (const refit of ['true', 1]) {
    await assert.rejects(client.proposeCalibration(spec, { refit: /** @type {any} */ (refit) }),
      isError('INVALID_ARGUMENT', 'refit'));
  }
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

/**
 * A client of the test server whose Calibrate calls are recorded ([the context id sent, the
 * calibrated id or the error code]); `alter` may change a request before it is sent.
 * @param {(request: any) => any} [alter]
 */
function recordingClient(alter = (request) => request) {
  const other = new ShapleyClient(server.target, { timeout: 120 });
  /** @type {string[][]} */ const calibrations = [];
  const unary = /** @type {any} */ (other)._unary.bind(other);
  /** @type {any} */ (other)._unary = async (/** @type {string} */ method, /** @type {any} */ request,
    /** @type {any[]} */ ...rest) => {
    if (method !== 'Calibrate') return unary(method, request, ...rest);
    try {
      const response = await unary(method, alter(request), ...rest);
      calibrations.push([request.contextId, response.context.contextId]);
      return response;
    } catch (error) {
      calibrations.push([request.contextId, /** @type {any} */ (error).code]);
      throw error;
    }
  };
  return { other, calibrations };
}

test('a context calibrated twice comes back on another client by replaying both calibrations in order', async () => {
  const own = { rows: makeRows(60, 5, 15), predictions: model(makeRows(60, 5, 15)) };
  const base = await client.createContext(own);
  const once = await client.calibrate(own, (/** @type {number[][]} */ r) => model(r), { budget: BUDGET });
  const twice = await client.calibrate(once, (/** @type {number[][]} */ r) => model(r), { budget: BUDGET });
  const before = await client.explain(twice, query, queryPredictions);
  for (const lost of [twice, once, base]) await client.deleteContext(lost);
  // Another client: the spec is encoded and created anew there, then both calibrations replayed.
  const { other, calibrations } = recordingClient();
  try {
    const after = await other.explain(twice, query, queryPredictions);
    assert.equal(after.contextId, before.contextId);
    assert.deepEqual(Array.from(after.values), Array.from(before.values));
    assert.deepEqual(calibrations, [
      [once.contextId, 'NOT_FOUND'], // the calibration twice came from: lost too
      [base.contextId, once.contextId], // calibration 1 of 2, on the spec created again
      [once.contextId, twice.contextId], // calibration 2 of 2
    ]);
  } finally {
    other.close();
  }
});

test('a lost calibrated context that comes back under another id is refused, never explained against', async () => {
  const own = { rows: makeRows(60, 5, 16), predictions: model(makeRows(60, 5, 16)) };
  const base = await client.createContext(own);
  const score = (/** @type {number[][]} */ r) => model(r);
  const once = await client.calibrate(own, score, { budget: BUDGET, refit: false });
  const twice = await client.calibrate(once, score, { budget: BUDGET });
  const ids = [base.contextId, once.contextId, twice.contextId];
  const before = await client.explain(twice, query, queryPredictions);
  // The calibrated contexts lost; the one they came from is still held (the spec changed since
  // is another context all the same).
  const loseCalibrated = async () => {
    for (const lost of [twice, once]) await client.deleteContext(lost).catch(() => {});
  };
  /**
   * @param {any} context @param {string} step @param {string} expected
   * @param {(request: any) => any} [alter]
   */
  const refused = async (context, step, expected, alter) => {
    await loseCalibrated();
    const { other, calibrations } = recordingClient(alter);
    try {
      const error = await other.explain(context, query, queryPredictions)
        .then(() => assert.fail('explained against another context'), (/** @type {any} */ e) => e);
      assert.ok(error instanceof ShapleyError, String(error));
      assert.equal(error.code, 'NOT_FOUND', error.message);
      assert.equal(error.field, 'context_id', error.message);
      assert.ok(error.details.startsWith(`context_id: ${context.contextId} is not held by this server`),
        error.details);
      assert.match(error.details, new RegExp(`: ${step} gave ctx-\\w+, not ${expected} `));
      return calibrations;
    } finally {
      other.close();
    }
  };

  // The spec changed since (what a server with another artifact does too: other contexts from
  // the same data): refused before Calibrate is sent.
  /** @type {any} */ (own).randomState = 5;
  assert.deepEqual(await refused(twice, 'its spec', base.contextId), [[once.contextId, 'NOT_FOUND']]);
  assert.deepEqual(await refused(once, 'its spec', base.contextId), []);
  delete (/** @type {any} */ (own).randomState);

  // A calibration that gives another context (here an output changed on the way: a changed
  // seed is now refused sooner, its rows' sha256 no longer the proposal's).
  /** @param {string} on the context id whose Calibrate request is changed */
  const altered = (on) => (/** @type {any} */ request) => {
    if (request.contextId !== on) return request;
    const data = Buffer.from(request.outputs.data);
    data.writeDoubleLE(data.readDoubleLE(0) + 0.5, 0);
    return { ...request, outputs: { ...request.outputs, data } };
  };
  await refused(twice, 'calibration 1 of 2', once.contextId, altered(base.contextId));
  await refused(twice, 'calibration 2 of 2', twice.contextId, altered(once.contextId));
  await refused(once, 'calibration 1 of 1', once.contextId, altered(base.contextId));

  // The objects kept their ids throughout, and come back as themselves where nothing differs.
  assert.deepEqual([once.contextId, twice.contextId], ids.slice(1));
  await loseCalibrated();
  const again = await client.explain(twice, query, queryPredictions);
  assert.equal(again.contextId, twice.contextId);
  assert.deepEqual(Array.from(again.values), Array.from(before.values));
});

test('calibrate sends back the sha256 ProposeCalibration answered: rows it would not propose are refused', async () => {
  // Calibrate rebuilds the rows; a replica of another version draws others. Here the answer's
  // fingerprint is altered as such a replica's rows would alter it.
  const original = /** @type {any} */ (client)._unary.bind(client);
  /** @type {string[]} */ const proposed = [];
  /** @type {string[]} */ const sent = [];
  /** @type {any} */ (client)._unary = async (/** @type {string} */ method,
    /** @type {any} */ request, /** @type {any} */ options) => {
    if (method === 'Calibrate') sent.push(request.proposalSha256);
    const response = await original(method, request, options);
    if (method === 'ProposeCalibration') proposed.push(response.proposalSha256);
    return response;
  };
  try {
    const id = (await client.createContext(spec)).contextId;
    const proposal = await client.proposeCalibration(id, { budget: BUDGET, randomState: 21 });
    assert.match(proposal.proposalSha256, /^[0-9a-f]{64}$/);
    await client.calibrate(id, (/** @type {number[][]} */ r) => model(r),
      { budget: BUDGET, randomState: 21 });
    assert.deepEqual(sent, proposed.slice(1));
    /** @type {any} */ (client)._unary = async (/** @type {string} */ method,
      /** @type {any} */ request, /** @type {any} */ options) => {
      const response = await original(method, request, options);
      return method === 'ProposeCalibration'
        ? { ...response, proposalSha256: 'f'.repeat(64) } : response;
    };
    await assert.rejects(
      client.calibrate(id, (/** @type {number[][]} */ r) => model(r),
        { budget: BUDGET, randomState: 22 }),
      isError('INVALID_ARGUMENT', 'proposal_sha256'));
  } finally {
    /** @type {any} */ (client)._unary = original;
  }
});
