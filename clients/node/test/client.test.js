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
    if (field === null) assert.deepEqual(error.violations, []);
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
  assert.deepEqual(e.attributionNames, NAMES);
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
  assert.deepEqual(streamed.attributionNames, NAMES);
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
    // The server's words for the expected count vary ("context ctx-... has 5", "... fitted on 5").
    isError('INVALID_ARGUMENT', 'rows', /^rows: has 4 features; .*\b5 \(context ctx-\w+\)$/),
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

test('the fields at fault come from the rich status: google.rpc.BadRequest field violations', async () => {
  const error = await client.explain(info.contextId, makeRows(3, 4, 4)).catch((e) => e);
  assert.ok(error instanceof ShapleyError, String(error));
  assert.equal(error.metadata.get('grpc-status-details-bin').length, 1);
  assert.equal(error.metadata.get('shapley-error-field').length, 0);
  assert.deepEqual(error.violations.map((/** @type {any} */ v) => v.field), ['rows']);
  assert.match(error.violations[0].description, /^has 4 features; .*\b5 \(context ctx-\w+\)$/);
  assert.equal(error.details, `rows: ${error.violations[0].description}`);
  assert.equal(error.field, 'rows');
  // Refused before sending: the same shape, from the client.
  const local = await client.explain(info.contextId, [[1, 2], [3]]).catch((e) => e);
  assert.deepEqual(local.violations, [{ field: 'rows', description: 'row 1 has 1 entries; row 0 has 2' }]);
  assert.equal(local.field, 'rows');
});

test('arrays are checked before anything is sent', async () => {
  await assert.rejects(client.explain(info.contextId, [[1, 2, 3, 4, 5], [1, 2]]),
    isError('INVALID_ARGUMENT', 'rows', /row 1 has 2 entries/));
  // A later row that is no array at all said "row 1 has undefined entries".
  await assert.rejects(client.explain(info.contextId, [[1, 2, 3, 4, 5], 7]),
    isError('INVALID_ARGUMENT', 'rows', /^rows: row 1 is number, not an array of 5 numbers like row 0$/));
  await assert.rejects(client.explain(info.contextId, [[1, 2, 3, 4, 5], null]),
    isError('INVALID_ARGUMENT', 'rows', /^rows: row 1 is null, not an array/));
  await assert.rejects(client.explain(info.contextId, { data: new Float64Array(7), shape: [2, 5] }),
    isError('INVALID_ARGUMENT', 'rows', /needs 10 values/));
  await assert.rejects(client.explain(info.contextId, [1, 2, 3, 4, 5]),
    isError('INVALID_ARGUMENT', 'rows', /must be 2-D/));
  // 2^64 + 1 would reach the server as 1 (uint64 wraps): refused here, like what is not an integer.
  for (const seed of [-1, 'abc', NaN, 1.5, 2 ** 60, 2n ** 64n, String(2n ** 64n + 1n)]) {
    await assert.rejects(
      client.createContext({ rows: [[1, 2], [3, 4]], predictions: [0, 1], randomState: seed }),
      isError('INVALID_ARGUMENT', 'context.random_state', /must be a non-negative integer below 2\^64/));
  }
  // The wire takes a uint64; the server takes [0, 2^32) and says so.
  await assert.rejects(client.createContext({ rows, predictions, randomState: 2 ** 32 }),
    isError('INVALID_ARGUMENT', 'context.random_state'));
});

test('{data: number[], shape} is checked entry by entry, as nested arrays are: nothing coerced', async () => {
  // Float64Array.from took null as 0 and a string as NaN (a missing value): an answer for
  // other rows than the caller's, with no error. A bigint threw a bare TypeError.
  /** @type {[string, any[], string][]} */
  const cases = [
    ['null', [0.5, null, 0.1, 0, 0], 'data[1] is null'],
    ['a string', [0.5, 0, 'oops', 0, 0], 'data[2] is string'],
    ['a numeric string', [0.5, 0, 0, '1', 0], 'data[3] is string'],
    ['undefined', [0.5, 0, 0, 0, undefined], 'data[4] is undefined'],
    ['a bigint', [1n, 2n, 3n, 4n, 5n], 'data[0] is bigint'],
    ['a boolean', [0, true, 0, 0, 0], 'data[1] is boolean'],
  ];
  for (const [name, data, problem] of cases) {
    const refused = await client.explain(info.contextId, { data, shape: [1, 5] })
      .then(() => assert.fail(`${name}: taken`), (/** @type {any} */ e) => e);
    isError('INVALID_ARGUMENT', 'rows')(refused);
    assert.equal(refused.details, `rows: ${problem}, not a number (a missing value is NaN)`, name);
    assert.equal(refused.metadata, null, `${name}: refused by the server, not before sending`);
  }
  await assert.rejects(client.explain(info.contextId, query.slice(0, 1), { data: [null], shape: [1] }),
    isError('INVALID_ARGUMENT', 'predictions', /^predictions: data\[0\] is null, not a number/));
  await assert.rejects(client.explain(info.contextId, query.slice(0, 2), [0.5, null]),
    isError('INVALID_ARGUMENT', 'predictions', /^predictions: \[1\] is null, not a number/));
  const holed = rows.flat().map((value, i) => (i === 7 ? null : value));
  await assert.rejects(client.createContext({ rows: { data: holed, shape: [300, 5] }, predictions }),
    isError('INVALID_ARGUMENT', 'context.rows', /^context\.rows: data\[7\] is null, not a number/));
  await assert.rejects(client.explain(info.contextId, { data: new BigInt64Array(5), shape: [1, 5] }),
    isError('INVALID_ARGUMENT', 'rows', /BigInt64Array/));
  // Numbers are taken as they are, NaN included: the same answer as nested arrays.
  const withNaN = [query[0], [NaN, ...query[1].slice(1)]];
  const fromList = await client.explain(info.contextId, { data: withNaN.flat(), shape: [2, 5] },
    { data: queryPredictions.slice(0, 2), shape: [2] });
  const nested = await client.explain(info.contextId, withNaN, queryPredictions.slice(0, 2));
  assert.deepEqual(fromList.values, nested.values);
});

test('explainStream refuses a chunkRows that is not a positive integer, naming chunk_rows, before sending', async () => {
  // A client of no server: anything sent would fail UNAVAILABLE.
  const nowhere = new ShapleyClient('127.0.0.1:1', { timeout: 5, maxAttempts: 1 });
  try {
    for (const chunkRows of [0, -1, 1.5, Number.NaN, Infinity, '10', 10n]) {
      const refused = await nowhere.explainStream(spec, query, null, { chunkRows: /** @type {any} */ (chunkRows) })
        .then(() => assert.fail(`chunkRows ${String(chunkRows)}: taken`), (/** @type {any} */ e) => e);
      isError('INVALID_ARGUMENT', 'chunk_rows', /^chunk_rows: must be a positive integer; got /)(refused);
    }
    const refused = await nowhere.explainStream(spec, query, null, { chunkRows: /** @type {any} */ ('10') })
      .catch((/** @type {any} */ e) => e);
    assert.equal(refused.details, 'chunk_rows: must be a positive integer; got "10"');
  } finally {
    nowhere.close();
  }
});

test('pageSize and a refinement budget that are not integers are quoted as chunkRows is', async () => {
  // A client of no server: anything sent would fail UNAVAILABLE.
  const nowhere = new ShapleyClient('127.0.0.1:1', { timeout: 5, maxAttempts: 1 });
  try {
    const listed = await nowhere.listContexts({ pageSize: /** @type {any} */ ('2') })
      .catch((/** @type {any} */ e) => e);
    isError('INVALID_ARGUMENT', 'page_size')(listed);
    assert.equal(listed.details, 'page_size: must be an integer >= 1; got "2"');
    const refined = await nowhere.explain(spec, query, null,
      { model: (/** @type {number[][]} */ r) => model(r), budget: /** @type {any} */ ('10') })
      .catch((/** @type {any} */ e) => e);
    isError('INVALID_ARGUMENT', 'budget')(refined);
    assert.equal(refined.details, 'budget: must be a positive integer; got "10"');
    const calibrated = await nowhere.calibrate(spec, (/** @type {number[][]} */ r) => model(r),
      { budget: /** @type {any} */ (10n) }).catch((/** @type {any} */ e) => e);
    isError('INVALID_ARGUMENT', 'budget', /; got 10n$/)(calibrated);
  } finally {
    nowhere.close();
  }
});

test('background and group indices: integer numbers only, refused before sending, never coerced', async () => {
  // A client of no server: anything sent would fail UNAVAILABLE. Number() would take true as 1,
  // '5' as 5 and [7] as 7.
  const nowhere = new ShapleyClient('127.0.0.1:1', { timeout: 5, maxAttempts: 1 });
  const base = { rows: rows.slice(0, 40), predictions: predictions.slice(0, 40) };
  /** @type {[any, string, RegExp][]} */
  const cases = [
    [{ background: [true, 5] }, 'context.background', /^context\.background: \[0\] must be a row index \(an integer\); got true$/],
    [{ background: [0, '5'] }, 'context.background', /\[1\] must be a row index \(an integer\); got "5"$/],
    [{ background: [[7]] }, 'context.background', /\[0\] must be a row index \(an integer\); got an array \(\[7\]\)$/],
    [{ background: [1n] }, 'context.background', /\[0\] must be a row index \(an integer\); got 1n$/],
    [{ background: [1.5] }, 'context.background', /got 1\.5$/],
    [{ background: [null] }, 'context.background', /got null$/],
    [{ background: '12' }, 'context.background', /must be an array of row indices \(integers\); got "12"$/],
    [{ groups: { a: [0], b: [true, 2, 3, 4] } }, 'context.groups',
      /^context\.groups: "b"\[0\] must be a column index \(an integer\); got true$/],
    [{ groups: { a: [[0]], b: [1, 2, 3, 4] } }, 'context.groups', /"a"\[0\] must be a column index \(an integer\); got an array/],
    [{ groups: { a: [0], b: ['1', 2, 3, 4] } }, 'context.groups', /"b"\[0\] .*got "1"$/],
    [{ groups: { a: 0, b: [1, 2, 3, 4] } }, 'context.groups', /"a" must be an array of column indices \(integers\); got 0$/],
    // {} and an empty Map were no groups at all: fitted per feature, with no error.
    [{ groups: {} }, 'context.groups', /^context\.groups: must hold at least one group$/],
    [{ groups: new Map() }, 'context.groups', /must hold at least one group$/],
    [{ groups: [['a', [0, 1]], ['b']] }, 'context.groups', /item 1 must be a \[name, column indices\] pair/],
    [{ groups: 'ab' }, 'context.groups', /got a string$/],
  ];
  try {
    for (const [extra, field, words] of cases) {
      await assert.rejects(nowhere.createContext({ ...base, ...extra }),
        isError('INVALID_ARGUMENT', field, words), JSON.stringify(extra, (_, v) => (typeof v === 'bigint' ? `${v}n` : v)));
    }
  } finally {
    nowhere.close();
  }
  // Integer numbers, in arrays or typed arrays, go as they are.
  const taken = await client.createContext({ ...base, background: Int32Array.from([0, 3, 5, 9]),
    groups: { a: [0, 1], b: Uint8Array.from([2, 3, 4]) } });
  assert.equal(taken.nBackground, 4);
  assert.deepEqual(taken.groups, [{ name: 'a', columns: [0, 1] }, { name: 'b', columns: [2, 3, 4] }]);
});

test('groups: one exactly efficient value per group, named by the groups', async () => {
  const groups = { person: [0, 3], money: [1, 2], other: [4] };
  const grouped = await client.createContext({ rows, predictions, featureNames: NAMES, groups });
  assert.deepEqual(grouped.attributionNames, ['person', 'money', 'other']);
  assert.deepEqual(grouped.groups.map((g) => g.name), ['person', 'money', 'other']);
  // A Map, or [name, columns] pairs as the Python client takes them: the same context (a Map
  // was silently no groups).
  for (const same of [new Map(Object.entries(groups)), Object.entries(groups)]) {
    const again = await client.createContext({ rows, predictions, featureNames: NAMES, groups: same });
    assert.equal(again.contextId, grouped.contextId);
  }
  const e = await client.explain(grouped.contextId, query, queryPredictions);
  assert.deepEqual(e.shape, [40, 3]);
  // nFeatures is d, as documented (it gave the number of groups); nAttributions is P.
  assert.equal(e.nFeatures, 5);
  assert.equal(e.nAttributions, 3);
  assert.deepEqual(e.attributionNames, ['person', 'money', 'other']);
  assert.deepEqual(e.featureNames, NAMES);
  assertEfficient(e, queryPredictions);
  await assert.rejects(
    client.createContext({ rows, predictions, groups: { a: [0, 1], b: [1, 2, 3, 4] } }),
    isError('INVALID_ARGUMENT', 'context.groups', /column 1 is in both 'a' and 'b'/),
  );
});

test('NaN in rows is a missing value, in nested arrays and in Float64Arrays', async () => {
  /** The model reads a missing x0 as 1. @param {number[][]} xs */
  const holedModel = (xs) => model(xs.map((x) => (Number.isNaN(x[0]) ? [1, ...x.slice(1)] : x)));
  const holed = rows.map((x, i) => (i % 7 === 0 ? [NaN, ...x.slice(1)] : x.slice()));
  const created = await client.createContext({ rows: holed, predictions: holedModel(holed) });
  assert.equal(created.nRows, 300);
  assert.deepEqual(created.categoricalColumns, []);
  const q = [[NaN, ...query[0].slice(1)], query[1], [query[2][0], NaN, ...query[2].slice(2)]];
  const qp = holedModel(q.map((x) => (Number.isNaN(x[1]) ? [x[0], 0, ...x.slice(2)] : x)));
  const nested = await client.explain(created.contextId, q);
  const flat = await client.explain(created.contextId, { data: Float64Array.from(q.flat()), shape: [3, 5] });
  assert.deepEqual(flat.values, nested.values);
  for (const value of nested.values) assert.ok(Number.isFinite(value));
  const pinned = await client.explain(created.contextId, q, qp);
  assertEfficient(pinned, qp);
  // Infinity is no value: the server names the field. null is not NaN: refused before sending.
  await assert.rejects(client.explain(created.contextId, [[Infinity, 0, 0, 0, 0]]),
    isError('INVALID_ARGUMENT', 'rows', /^rows: values must be finite or NaN \(missing\); found inf at \[0, 0\]/));
  await assert.rejects(client.explain(created.contextId, [[0, null, 0, 0, 0]]),
    isError('INVALID_ARGUMENT', 'rows', /\[0\]\[1\] is null, not a number \(a missing value is NaN\)/));
});

test('aliases: the attributions the context cannot tell apart, as index sets', async () => {
  // Column 5 is 10 x age: no output on these rows says which of the two a model reads.
  const copied = rows.map((x) => [...x, 10 * x[0]]);
  const created = await client.createContext({ rows: copied, predictions: model(rows) });
  assert.deepEqual(created.aliases, [{ attributions: [0, 5] }]);
  const plain = await client.createContext({ rows, predictions });
  assert.deepEqual(plain.aliases, []);
});

/** 300 rows whose columns 'region' (codes 0-2) and 'plan' (codes 0-3, some missing) are categories. */
const CODED_NAMES = ['age', 'region', 'plan', 'tenure'];
const coded = makeRows(300, 4, 21).map((x, i) => [x[0], i % 3, i % 10 === 9 ? NaN : i % 4, x[3]]);
/** A model that reads the codes as categories (an unseen or missing plan: 0.3). @param {number[][]} xs */
const codedModel = (xs) => xs.map((x) =>
  sigmoid(x[0] + ([0.4, -0.6, 0][x[1]] ?? 0) + ([0.5, -1, 2, 0][x[2]] ?? 0.3) + 0.5 * x[3]));
const codedPredictions = codedModel(coded);

test('categoricalColumns by name or index: declared, echoed, in any order; unseen codes explained', async () => {
  const byName = await client.createContext({
    rows: coded, predictions: codedPredictions, featureNames: CODED_NAMES, categoricalColumns: ['plan', 'region'],
  });
  assert.deepEqual(byName.categoricalColumns, [1, 2]);
  const byIndex = await client.createContext({
    rows: coded, predictions: codedPredictions, featureNames: CODED_NAMES, categoricalColumns: [1, 'plan'],
  });
  assert.equal(byIndex.contextId, byName.contextId);
  assert.equal(byIndex.created, false);
  const plain = await client.createContext({ rows: coded, predictions: codedPredictions, featureNames: CODED_NAMES });
  assert.notEqual(plain.contextId, byName.contextId);
  assert.deepEqual(plain.categoricalColumns, []);

  // A spec sent inline by explain (created on first use): region 7 and plan 9 were never seen.
  const q = [[0.2, 7, 9, 0.1], [0.5, 1, NaN, -0.3], [-1, 2, 1, 0]];
  const qp = codedModel(q);
  const fresh = {
    rows: coded, predictions: codedPredictions, featureNames: CODED_NAMES, categoricalColumns: [2, 1],
  };
  const e = await client.explain(fresh, q, qp);
  assert.equal(e.contextId, byName.contextId);
  assert.deepEqual(e.shape, [3, 4]); // one attribution per raw column, never one per level
  assert.deepEqual(e.attributionNames, CODED_NAMES);
  assert.deepEqual(e.context && e.context.categoricalColumns, [1, 2]);
  assertEfficient(e, qp);
  const streamed = await client.explainStream(fresh, q, qp, { chunkRows: 2 });
  assert.deepEqual(streamed.values, e.values);
});

test('bad categoricalColumns: refused before sending, or by the server naming context.categorical_columns', async () => {
  const base = { rows: coded, predictions: codedPredictions, featureNames: CODED_NAMES };
  /** @type {[any, RegExp][]} */
  const local = [
    [['zip'], /\[0\] names column "zip", which is not a feature name/],
    [[1, -1], /\[1\] must be a column index \(an integer in \[0, 2\^32\)\) or a name; got -1/],
    [[1.5], /got 1\.5/],
    [[2 ** 32], /got 4294967296/],
    ['plan', /must be an array of column indices or names/],
  ];
  for (const [categoricalColumns, words] of local) {
    await assert.rejects(client.createContext({ ...base, categoricalColumns }),
      isError('INVALID_ARGUMENT', 'context.categorical_columns', words));
  }
  // Without featureNames, names are the server's defaults.
  const defaults = await client.createContext({ rows: coded, predictions: codedPredictions, categoricalColumns: ['x2', 'x1'] });
  assert.deepEqual(defaults.categoricalColumns, [1, 2]);
  // Sent, and refused by the server with the field at fault.
  await assert.rejects(client.createContext({ ...base, categoricalColumns: [1, 4] }),
    isError('INVALID_ARGUMENT', 'context.categorical_columns', /column 4, outside \[0, 4\)/));
  await assert.rejects(client.createContext({ ...base, categoricalColumns: ['plan', 2] }),
    isError('INVALID_ARGUMENT', 'context.categorical_columns', /lists column 2/));
  await assert.rejects(client.createContext({ ...base, categoricalColumns: ['age'] }),
    isError('INVALID_ARGUMENT', 'context.rows', /integer codes or NaN/));
  const error = await client.explain(
    { ...base, categoricalColumns: [2] }, [[0, 0, 1.5, 0]],
  ).catch((/** @type {any} */ e) => e);
  isError('INVALID_ARGUMENT', 'rows', /column 2 \('plan'\) is categorical .*found 1\.5/)(error);
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
  assert.deepEqual(e.attributionNames, ['x0', 'x1', 'x2']);
  for (let i = 0; i < 4; i++) {
    const { values, baseValue } = e.row(i);
    assert.equal(values.length, 3);
    for (let k = 0; k < 2; k++) {
      const sum = values.reduce((s, v) => s + v[k], 0);
      assert.ok(Math.abs(sum - (qTwo[i][k] - baseValue[k])) < 1e-9, `row ${i} output ${k}`);
    }
  }
});

/** A context of 3,000 rows x 8 features (about 216 KB): many blocks under a 64 KiB limit. */
const big = makeRows(3000, 8, 11);
const bigPredictions = model(big);
const bigQuery = makeRows(30, 8, 12);
const bigSettings = {
  featureNames: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'],
  background: [5, 17, 300, 2999],
  randomState: 3,
  groups: { first: [0, 1, 2], second: [3, 4], third: [5, 6, 7] },
};
const SMALL_LIMIT = 64 * 1024;

/**
 * A client that thinks the server takes 64 KiB messages (or `limit`), recording every
 * CreateContextStream call's messages and counting unary CreateContext calls.
 * @param {number} [limit]
 */
function streamingClient(limit = SMALL_LIMIT) {
  const streaming = new ShapleyClient(server.target, { timeout: 120, maxMessageBytes: limit });
  const recorded = { streams: /** @type {any[][]} */ ([]), unaryCreates: 0 };
  const stub = streaming._stub;
  const open = stub.CreateContextStream.bind(stub);
  stub.CreateContextStream = (/** @type {any[]} */ ...args) => {
    const call = open(...args);
    const messages = [];
    recorded.streams.push(messages);
    const write = call.write.bind(call);
    call.write = (/** @type {any} */ message, /** @type {any[]} */ ...rest) => {
      messages.push(message);
      return write(message, ...rest);
    };
    return call;
  };
  const unary = streaming._unary.bind(streaming);
  streaming._unary = (/** @type {string} */ method, /** @type {any[]} */ ...rest) => {
    if (method === 'CreateContext') recorded.unaryCreates += 1;
    return unary(method, ...rest);
  };
  return { streaming, recorded };
}

/** @param {any} info a context's info without what differs between two fits of it */
const stable = (info) => {
  const { fitSeconds, ...rest } = info;
  assert.ok(fitSeconds >= 0);
  return rest;
};

test('a context bigger than maxMessageBytes goes over CreateContextStream: same id, info and answers', async () => {
  const { streaming, recorded } = streamingClient();
  try {
    const streamSpec = { rows: big, predictions: bigPredictions, ...bigSettings };
    const streamed = await streaming.createContext(streamSpec);
    assert.equal(streamed.created, true);
    assert.equal(recorded.unaryCreates, 0);
    assert.equal(recorded.streams.length, 1);
    const blocks = recorded.streams[0].map((message) => message.context);
    assert.ok(blocks.length >= 3, `${blocks.length} blocks`);
    assert.equal(blocks.reduce((sum, block) => sum + block.rows.shape[0], 0), 3000);
    const budget = 0.9 * SMALL_LIMIT;
    blocks.forEach((block, i) => {
      assert.deepEqual(block.rows.shape.slice(1), [8]);
      assert.deepEqual(block.predictions.shape, [block.rows.shape[0]]);
      const bytes = streaming._serializeCreateRequest({ context: block }).length;
      assert.ok(bytes <= budget, `block ${i}: ${bytes} bytes`);
      // Blocks are as big as fit, the last one excepted.
      if (i < blocks.length - 1) assert.ok(bytes > 0.95 * budget, `block ${i}: ${bytes} bytes`);
      for (const key of ['featureNames', 'background', 'randomState', 'groups']) {
        assert.equal(key in block, i === 0, `block ${i}: ${key}`);
      }
      // The row count, so that the server refuses a stream cut off part way.
      assert.equal(block.totalRows, i === 0 ? 3000 : undefined, `block ${i}: totalRows`);
    });
    const streamedInfo = await client.getContext(streamed.contextId);
    assert.deepEqual(streamedInfo.featureNames, bigSettings.featureNames);
    assert.equal(streamedInfo.nRows, 3000);
    assert.equal(streamedInfo.nBackground, 4);
    assert.deepEqual(streamedInfo.groups, Object.entries(bigSettings.groups).map(([name, columns]) => ({ name, columns })));
    assert.deepEqual(streamedInfo.attributionNames, ['first', 'second', 'third']);
    await client.deleteContext(streamed.contextId);

    // The same data in one CreateContext: fitted anew, under the same id, to the same context.
    let unaryCreates = 0;
    const unary = client._unary.bind(client);
    client._unary = (method, ...rest) => {
      if (method === 'CreateContext') unaryCreates += 1;
      return unary(method, ...rest);
    };
    let created;
    try {
      created = await client.createContext({ rows: big.map((r) => r.slice()), predictions: bigPredictions.slice(), ...bigSettings });
    } finally {
      delete client._unary;
    }
    assert.equal(unaryCreates, 1);
    assert.equal(created.created, true);
    assert.equal(created.contextId, streamed.contextId);
    assert.deepEqual(stable(await client.getContext(created.contextId)), stable(streamedInfo));
    const queryPredictions8 = model(bigQuery);
    const viaUnary = await client.explain(created.contextId, bigQuery, queryPredictions8);
    await client.deleteContext(created.contextId);

    // explain() with the spec finds the context gone and re-creates it over the stream again.
    const viaStream = await streaming.explain(streamSpec, bigQuery, queryPredictions8);
    assert.equal(recorded.streams.length, 2);
    assert.equal(recorded.unaryCreates, 0);
    assert.equal(viaStream.contextId, streamed.contextId);
    assert.deepEqual(viaStream.shape, [30, 3]);
    for (const key of /** @type {const} */ (['values', 'baseValues', 'uncertainty'])) {
      assert.equal(viaStream[key].length, viaUnary[key].length);
      viaStream[key].forEach((value, i) => {
        assert.ok(Math.abs(value - viaUnary[key][i]) <= 1e-12, `${key}[${i}]: ${value} != ${viaUnary[key][i]}`);
      });
    }
    assertEfficient(viaStream, queryPredictions8);
  } finally {
    streaming.close();
  }
});

test('errors of a streamed context are ShapleyErrors naming the field, like CreateContext\'s', async () => {
  const { streaming, recorded } = streamingClient();
  try {
    // Predictions that do not pair with the rows are refused before anything is sent, in the
    // server's words for CreateContext.
    const short = { rows: big, predictions: bigPredictions.slice(0, 2999) };
    const local = await streaming.createContext(short).catch((e) => e);
    isError('INVALID_ARGUMENT', 'context.predictions')(local);
    assert.equal(recorded.streams.length, 0);
    const unary = await client.createContext({ ...short }).catch((e) => e);
    isError('INVALID_ARGUMENT', 'context.predictions')(unary);
    assert.equal(local.details, unary.details);

    // An infinity in the second block (NaN would be a missing value): refused by the server
    // while the blocks arrive.
    const poisoned = big.map((row, i) => (i === 1000 ? [Infinity, ...row.slice(1)] : row));
    const infinite = await streaming.createContext({ rows: poisoned, predictions: bigPredictions })
      .catch((/** @type {any} */ e) => e);
    isError('INVALID_ARGUMENT', 'context.rows')(infinite);
    const where = /^context\.rows: values must be finite or NaN \(missing\); found inf at \[(\d+), 0\] \(in message 1, whose first row is row (\d+) of the context\)$/
      .exec(infinite.details);
    assert.ok(where, infinite.details);
    assert.equal(Number(where[1]) + Number(where[2]), 1000); // the block's row + its first row
    // A background row past the end: refused once the whole context has arrived.
    await assert.rejects(
      streaming.createContext({ rows: big, predictions: bigPredictions, background: [0, 3000] }),
      isError('INVALID_ARGUMENT', 'context.background', /^context\.background: indices must lie in \[0, 3000\)/),
    );
    assert.equal(recorded.streams.length, 2);
    assert.ok(recorded.streams.every((messages) => messages.length >= 1));
    // The deadline applies to the stream as to any call.
    await assert.rejects(
      streaming.createContext({ rows: big, predictions: bigPredictions, randomState: 5 }, { timeout: 1e-6 }),
      isError('DEADLINE_EXCEEDED', null),
    );
    assert.equal(recorded.unaryCreates, 0);
  } finally {
    streaming.close();
  }
});

test('a streamed context with one row over maxMessageBytes is refused before sending, naming context.rows', async () => {
  // One row of 300 float64s: 2,400 bytes, over a client limit of 2,000: no block of rows fits.
  const { streaming, recorded } = streamingClient(2000);
  try {
    const wide = makeRows(4, 300, 13);
    const error = await streaming.createContext({ rows: wide, predictions: [0, 1, 2, 3] })
      .catch((/** @type {any} */ e) => e);
    isError('RESOURCE_EXHAUSTED', 'context.rows',
      /^context\.rows: one row's 2400 bytes \(and its predictions' 8\) make the CreateContextStream message \d+ bytes, over maxMessageBytes \(2000\b/)(error);
    assert.deepEqual(error.violations.map((/** @type {any} */ v) => v.field), ['context.rows']);
    assert.equal(error.metadata, null);
    assert.deepEqual(recorded.streams, []); // no call opened
    assert.equal(recorded.unaryCreates, 0);
  } finally {
    streaming.close();
  }
});

test('categoricalColumns travel in the first block of a streamed context: same id', async () => {
  const wide = makeRows(2000, 4, 31).map((x, i) => [x[0], x[1], i % 5, x[3]]);
  const widePredictions = wide.map((x) => sigmoid(x[0] + [0, 1, -1, 0.5, 2][x[2]]));
  const { streaming, recorded } = streamingClient();
  try {
    const streamed = await streaming.createContext({ rows: wide, predictions: widePredictions, categoricalColumns: ['x2'] });
    const blocks = recorded.streams[0].map((message) => message.context);
    assert.ok(blocks.length >= 2, `${blocks.length} blocks`);
    blocks.forEach((block, i) => assert.equal('categoricalColumns' in block, i === 0, `block ${i}`));
    assert.deepEqual(blocks[0].categoricalColumns, [2]);
    assert.deepEqual(streamed.categoricalColumns, [2]);
    assert.equal(recorded.unaryCreates, 0);
    const whole = await client.createContext({ rows: wide, predictions: widePredictions, categoricalColumns: [2] });
    assert.equal(whole.contextId, streamed.contextId);
  } finally {
    streaming.close();
  }
});

test('a timeout too long for a gRPC deadline is no deadline, as Infinity is; null options are absent', async () => {
  // grpc-js cannot write a deadline past 1e8 hours: it threw in its own async code, an unhandled
  // rejection that ended the process.
  for (const timeout of [1e12, Number.MAX_SAFE_INTEGER, Infinity]) {
    const patient = new ShapleyClient(server.target, { timeout });
    try {
      assert.equal(await patient.health(), 'SERVING');
      assert.ok((await patient.serverInfo({ timeout })).limits.maxExplainRows > 0);
    } finally {
      patient.close();
    }
  }
  // A timeout that is not a number of seconds >= 0 meant no deadline ('abc', NaN, -1) or was
  // read as one ('5'), silently.
  for (const timeout of ['abc', NaN, -1, '5']) {
    assert.throws(() => new ShapleyClient(server.target, { timeout: /** @type {any} */ (timeout) }),
      isError('INVALID_ARGUMENT', 'timeout'));
    await assert.rejects(client.serverInfo({ timeout: /** @type {any} */ (timeout) }),
      isError('INVALID_ARGUMENT', 'timeout'));
  }
  assert.ok((await client.serverInfo({ timeout: 0 })).limits.maxExplainRows > 0); // 0: none
  // null options were a TypeError in four methods.
  assert.ok(Array.isArray((await client.listContexts(/** @type {any} */ (null))).contexts));
  const e = await client.explainStream(spec, query, queryPredictions, /** @type {any} */ (null));
  assert.deepEqual(e.shape, [40, 5]);
  const proposal = await client.proposeCalibration(spec, /** @type {any} */ (null));
  assert.ok(proposal.shape[0] > 0);
});

test('explainStream refuses the options that refine, naming them (they were ignored: a zero-shot answer)', async () => {
  let calls = 0;
  const scorer = (/** @type {number[][]} */ r) => { calls += 1; return model(r); };
  for (const [options, field] of /** @type {[any, string][]} */ ([
    [{ model: scorer, budget: 20 }, 'model'], [{ budget: 20 }, 'budget'], [{ randomState: 3 }, 'random_state'],
  ])) {
    await assert.rejects(client.explainStream(spec, query, queryPredictions, options),
      isError('INVALID_ARGUMENT', field, /call explain with model and budget/));
  }
  assert.equal(calls, 0);
});

test('a per-call timeout becomes a gRPC deadline', async () => {
  // A call the server needs about a second for (a fit of 10,000 new rows). A microsecond timeout on
  // serverInfo raced a local answer that could come back within the same millisecond.
  const big = makeRows(10000, 5, 29);
  await assert.rejects(
    client.createContext({ rows: big, predictions: model(big) }, { timeout: 0.05 }),
    isError('DEADLINE_EXCEEDED', null),
  );
});
