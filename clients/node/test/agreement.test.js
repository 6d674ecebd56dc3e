'use strict';
// The Node and Python clients decide calibrate()'s refit and budget alike (Node
// _calibrationProposal, Python ShapleyClient._calibration_proposal): for the same server, context
// and arguments, the same calibrated context (the server derives its id from the budget, the
// seed, the outputs and whether the context's data came along), refitted or not, on as many
// scored rows; or the same refusal (code, field and the sizes it names), before the model runs
// in both or in neither. Each case runs through both clients' public calibrate() against the
// same server: Python in a subprocess (test/calibration_decisions.py, with the python next to
// SHAPLEY_SVC_COMMAND), with the same model in the same floating-point operations, so that both
// send the same outputs bit for bit. Each case's `expect` says which decision it is about, so
// that a case cannot agree by both clients failing alike for another reason.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const path = require('node:path');

const { ShapleyClient, ShapleyError } = require('..');
const { startServer, serverCommand } = require('../testkit/server');
const { makeRows } = require('../testkit/data');

const DEFAULT_BYTES = 64 * 1024 * 1024; // both clients' default maxMessageBytes
const HELPER = path.join(__dirname, 'calibration_decisions.py');

/**
 * The model, the same operations in the same order as calibration_decisions.py's (no
 * transcendental functions: libm and V8 may round those apart): sum_j (j + 1) x_j + 0.25 x_0 x_1.
 * @param {number[][]} rows
 */
function model(rows) {
  return rows.map((x) => {
    let out = 0;
    for (let j = 0; j < x.length; j++) out = out + (j + 1) * x[j];
    return out + 0.25 * (x[0] * x[1 % x.length]);
  });
}

/** Contexts by key: n rows of d features (seeded), predictions the model's. */
const CONTEXTS = /** @type {Record<string, {n: number, d: number, seed: number}>} */ ({
  // 60 background rows: the refit's default budget 1,200, the weights' 600. 2.9 kB.
  small: { n: 60, d: 5, seed: 5 },
  // 100 background rows: defaults 2,000 and 1,000 (proposals of 32 and 16 kB).
  lin300: { n: 300, d: 2, seed: 22 },
  rows400: { n: 400, d: 2, seed: 41 },
  // 16.8 kB: with the refit's default outputs (16 kB) over 31.5 kB, with the weights' (8 kB) not.
  lin700: { n: 700, d: 2, seed: 24 },
  // 19.2 kB: over 90% of a 20,000-byte message (streamed by a client with that limit).
  stream800: { n: 800, d: 2, seed: 31 },
  // Over the rows1000 server's max_context_rows itself.
  over1200: { n: 1200, d: 2, seed: 43 },
});

/** Server flags by key. */
const SERVERS = /** @type {Record<string, string[]>} */ ({
  roomy: [],
  rows1000: ['--max-context-rows', '1000'],
  narrow: ['--max-message-bytes', '20000', '--max-context-rows', '1340'],
});

/**
 * @typedef {{name: string, server: string, context: string, maxMessageBytes?: number,
 *   budget?: number, refit?: boolean, randomState?: number, expect: string}} Case
 * expect: 'refit N' / 'weights N' (N rows scored and calibrated on) or 'refused FIELD', the
 * decision both clients must make.
 */
/** @type {Case[]} */
const CASES = [
  // A default server, both clients' default limits: a refit fits on any default.
  { name: 'small: defaults', server: 'roomy', context: 'small', expect: 'refit 1200' },
  { name: 'small: refit true', server: 'roomy', context: 'small', refit: true, expect: 'refit 1200' },
  { name: 'small: refit false', server: 'roomy', context: 'small', refit: false, expect: 'weights 600' },
  { name: 'small: budget 0 (the default)', server: 'roomy', context: 'small', budget: 0, expect: 'refit 1200' },
  { name: 'small: budget 240, seeded', server: 'roomy', context: 'small', budget: 240, randomState: 7, expect: 'refit 240' },
  { name: 'small: budget 240, refit true', server: 'roomy', context: 'small', budget: 240, refit: true, expect: 'refit 240' },
  { name: 'small: budget 240, refit false', server: 'roomy', context: 'small', budget: 240, refit: false, expect: 'weights 240' },
  // The client's limit under the server's: the refit's default does not fit one message (16.8 kB
  // + 16 kB over 31.5 kB), the weights' default does (+ 8 kB): a refit on the weights' default.
  { name: 'lin700 @35000: defaults', server: 'roomy', context: 'lin700', maxMessageBytes: 35000, expect: 'refit 1000' },
  { name: 'lin700 @35000: refit true', server: 'roomy', context: 'lin700', maxMessageBytes: 35000, refit: true, expect: 'refit 1000' },
  { name: 'lin700 @35000: refit false', server: 'roomy', context: 'lin700', maxMessageBytes: 35000, refit: false, expect: 'weights 1000' },
  // A budget given: proposed in pairs of rows per background row (1,500: 1,400 rows), which fit
  // (+ 11.2 kB); 2,000 do not (+ 16 kB).
  { name: 'lin700 @35000: budget 1500', server: 'roomy', context: 'lin700', maxMessageBytes: 35000, budget: 1500, expect: 'refit 1400' },
  { name: 'lin700 @35000: budget 2000, seeded', server: 'roomy', context: 'lin700', maxMessageBytes: 35000, budget: 2000, randomState: 3, expect: 'weights 2000' },
  { name: 'lin700 @35000: budget 2000, refit true', server: 'roomy', context: 'lin700', maxMessageBytes: 35000, budget: 2000, refit: true, expect: 'refused refit' },
  // Streamed by the client (19.2 kB over 90% of its 20,000 bytes): the weights only, on their
  // default; refit true refused before the model runs.
  { name: 'stream800 @20000: defaults', server: 'roomy', context: 'stream800', maxMessageBytes: 20000, expect: 'weights 1000' },
  { name: 'stream800 @20000: refit true', server: 'roomy', context: 'stream800', maxMessageBytes: 20000, refit: true, expect: 'refused refit' },
  { name: 'stream800 @20000: refit false', server: 'roomy', context: 'stream800', maxMessageBytes: 20000, refit: false, expect: 'weights 1000' },
  { name: 'stream800 @20000: budget 500', server: 'roomy', context: 'stream800', maxMessageBytes: 20000, budget: 500, expect: 'weights 400' },
  { name: 'stream800 @20000: budget 500, refit true', server: 'roomy', context: 'stream800', maxMessageBytes: 20000, budget: 500, refit: true, expect: 'refused refit' },
  // To the byte: lin300 with budget 400 makes a 10,555-byte Calibrate request (its
  // proposal_sha256 included: 66 bytes; see below). A bound of floor(0.9 x 11,728) = 10,555
  // holds it; one of floor(0.9 x 11,724) = 10,551 does not.
  { name: 'lin300 @11728: budget 400 (a refit fits to the byte)', server: 'roomy', context: 'lin300', maxMessageBytes: 11728, budget: 400, expect: 'refit 400' },
  { name: 'lin300 @11724: budget 400 (a refit over by 4 bytes)', server: 'roomy', context: 'lin300', maxMessageBytes: 11724, budget: 400, expect: 'weights 400' },
  { name: 'lin300 @11724: budget 400, refit true (over by 4 bytes)', server: 'roomy', context: 'lin300', maxMessageBytes: 11724, budget: 400, refit: true, expect: 'refused refit' },
  // lin300 (a 7,225-byte spec) with budget 400 (400 outputs), a 44-character context id and the
  // proposal's sha256 is 10,555 bytes on the wire; under a bound of floor(0.9 x 11,726) = 10,553
  // neither client refits. Python once left out the context field's tag and length (1 + 2
  // bytes) and refitted; a client that left out the sha256 (66 bytes) would too.
  { name: 'lin300 @11726: budget 400 (3 bytes of framing)', server: 'roomy', context: 'lin300', maxMessageBytes: 11726, budget: 400, expect: 'weights 400' },
  { name: 'lin300 @11726: budget 400, refit true (3 bytes of framing)', server: 'roomy', context: 'lin300', maxMessageBytes: 11726, budget: 400, refit: true, expect: 'refused refit' },
  // A client limit under the proposal's answer (1,200 rows of 5, 48 kB): neither client caps
  // what it receives (the server keeps its answers within its own limit), and the refit's
  // request does not fit 11,000 bytes, so both fall back to the weights' default (2.9 kB +
  // 9.6 kB over 9,900 B; + 4.8 kB within): a refit on 600. Python once capped its answers at
  // max_message_bytes and failed here (RESOURCE_EXHAUSTED, no field).
  { name: 'small @11000: defaults (proposal over the client\'s limit)', server: 'roomy', context: 'small', maxMessageBytes: 11000, expect: 'refit 600' },
  // max_context_rows 1,000: 60 + 1,200 over it, 60 + 600 within it: a refit on the weights' default.
  { name: 'rows1000 small: defaults', server: 'rows1000', context: 'small', expect: 'refit 600' },
  { name: 'rows1000 small: refit true', server: 'rows1000', context: 'small', refit: true, expect: 'refit 600' },
  { name: 'rows1000 small: budget 240', server: 'rows1000', context: 'small', budget: 240, expect: 'refit 240' },
  // 400 + 1,000 over it even on the weights' default: weights only, or refused naming budget.
  { name: 'rows1000 rows400: defaults', server: 'rows1000', context: 'rows400', expect: 'weights 1000' },
  { name: 'rows1000 rows400: refit true', server: 'rows1000', context: 'rows400', refit: true, expect: 'refused budget' },
  { name: 'rows1000 rows400: refit false', server: 'rows1000', context: 'rows400', refit: false, expect: 'weights 1000' },
  // 400 + 500 within it (400 rows proposed); 400 + 700 not, though the 600 rows proposed for
  // it would be: the budget counts, as the server counts it.
  { name: 'rows1000 rows400: budget 500', server: 'rows1000', context: 'rows400', budget: 500, expect: 'refit 400' },
  { name: 'rows1000 rows400: budget 700', server: 'rows1000', context: 'rows400', budget: 700, expect: 'weights 600' },
  // To the row: 400 + 600 is the limit; 400 + 601 over it (600 rows proposed for either).
  { name: 'rows1000 rows400: budget 600 (1,000 rows in all)', server: 'rows1000', context: 'rows400', budget: 600, expect: 'refit 600' },
  { name: 'rows1000 rows400: budget 601 (1,001 rows in all)', server: 'rows1000', context: 'rows400', budget: 601, expect: 'weights 600' },
  { name: 'rows1000 rows400: budget 601, refit true', server: 'rows1000', context: 'rows400', budget: 601, refit: true, expect: 'refused budget' },
  { name: 'rows1000 rows400: budget 700, refit true', server: 'rows1000', context: 'rows400', budget: 700, refit: true, expect: 'refused budget' },
  // A context over max_context_rows: the server's refusal, alike.
  { name: 'rows1000 over1200: defaults', server: 'rows1000', context: 'over1200', expect: 'refused context.rows' },
  // The server's 20,000-byte messages cannot carry the refit's default proposal (32 kB): the
  // weights' default, refitted on (300 + 1,000 within 1,340 rows; 7.2 + 8 kB within 18,000 B).
  { name: 'narrow lin300: defaults', server: 'narrow', context: 'lin300', expect: 'refit 1000' },
  { name: 'narrow lin300: refit true', server: 'narrow', context: 'lin300', refit: true, expect: 'refit 1000' },
  { name: 'narrow lin300: refit false', server: 'narrow', context: 'lin300', refit: false, expect: 'weights 1000' },
  { name: 'narrow lin300: budget 2000 (the server refuses it)', server: 'narrow', context: 'lin300', budget: 2000, expect: 'refused budget' },
  // 300 + 1,050 over 1,340 rows (1,000 rows proposed).
  { name: 'narrow lin300: budget 1050', server: 'narrow', context: 'lin300', budget: 1050, expect: 'weights 1000' },
  { name: 'narrow lin300: budget 1050, refit true', server: 'narrow', context: 'lin300', budget: 1050, refit: true, expect: 'refused budget' },
  // The server's limit the smaller (the clients' at 64 MiB): 16.8 kB + the outputs past 18,000 B.
  { name: 'narrow lin700: defaults', server: 'narrow', context: 'lin700', expect: 'weights 1000' },
  { name: 'narrow lin700: refit true', server: 'narrow', context: 'lin700', refit: true, expect: 'refused refit' },
  { name: 'narrow lin700: budget 600', server: 'narrow', context: 'lin700', budget: 600, expect: 'weights 600' },
  { name: 'narrow lin700: budget 600, refit true', server: 'narrow', context: 'lin700', budget: 600, refit: true, expect: 'refused refit' },
];

/** @param {string} message the sizes a refusal names (as calibration_decisions.py reads them) */
function numbers(message) {
  let found = /do not fit in one (\d+)-byte message/.exec(message);
  if (found) return [Number(found[1])];
  found = /(\d+) in all; the limit is (\d+)/.exec(message);
  return found ? [Number(found[1]), Number(found[2])] : [];
}

/** @type {Record<string, {rows: number[][], predictions: number[]}>} */
const data = {};
for (const [key, { n, d, seed }] of Object.entries(CONTEXTS)) {
  const rows = makeRows(n, d, seed);
  data[key] = { rows, predictions: model(rows) };
}

/** @param {number[]} values */
const base64 = (values) => Buffer.from(Float64Array.from(values).buffer).toString('base64');

/**
 * The Python client's outcomes of `cases` against `target`, by case name.
 * @param {string} target
 * @param {Case[]} cases
 * @returns {Promise<Record<string, any>>}
 */
function pythonOutcomes(target, cases) {
  const contexts = Object.fromEntries([...new Set(cases.map((c) => c.context))].map((key) => {
    const { rows, predictions } = data[key];
    return [key, {
      rows: base64(rows.flat()), shape: [rows.length, rows[0].length],
      predictions: base64(predictions), predictionShape: [predictions.length],
    }];
  }));
  const job = {
    target,
    contexts,
    cases: cases.map((c) => ({ ...c, maxMessageBytes: c.maxMessageBytes ?? DEFAULT_BYTES })),
  };
  const python = path.join(path.dirname(serverCommand()[0]), 'python');
  return new Promise((resolve, reject) => {
    const child = execFile(python, [HELPER], { maxBuffer: 16 * 1024 * 1024, timeout: 300_000 },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`${HELPER} failed: ${error.message}\n${stderr}`));
        else resolve(JSON.parse(stdout));
      });
    /** @type {import('node:stream').Writable} */ (child.stdin).end(JSON.stringify(job));
  });
}

/**
 * The Node client's outcome of `c` (calibrate() with `client`), as calibration_decisions.py
 * gives Python's.
 * @param {ShapleyClient} client
 * @param {Case} c
 */
async function nodeOutcome(client, c) {
  let scored = 0;
  const score = (/** @type {number[][]} */ rows) => {
    scored += rows.length;
    return model(rows);
  };
  try {
    const calibrated = await client.calibrate(data[c.context], score,
      { budget: c.budget, refit: c.refit, randomState: c.randomState });
    return {
      contextId: calibrated.contextId,
      refitted: calibrated.calibrationRefitted,
      calibrationRows: Number(calibrated.calibrationRows),
      scored,
    };
  } catch (error) {
    if (!(error instanceof ShapleyError)) throw error;
    return { refused: { code: error.code, field: error.field, numbers: numbers(error.message) }, scored };
  }
}

/** @param {any} outcome 'refit N', 'weights N' or 'refused FIELD' */
function decision(outcome) {
  if (outcome.refused) return `refused ${outcome.refused.field}`;
  return `${outcome.refitted ? 'refit' : 'weights'} ${outcome.calibrationRows}`;
}

/** @type {Record<string, Awaited<ReturnType<typeof startServer>>>} */
const servers = {};

before(async () => {
  await Promise.all(Object.entries(SERVERS).map(async ([key, args]) => {
    servers[key] = await startServer({ args });
  }));
}, { timeout: 600_000 });

after(async () => {
  await Promise.all(Object.values(servers).map((server) => server.stop()));
});

test('calibrate: the Node and Python clients decide refit and budget alike', { concurrency: true }, async (t) => {
  await Promise.all(Object.keys(SERVERS).map((key) => t.test(`server ${key} ${SERVERS[key].join(' ')}`, async (s) => {
    const cases = CASES.filter((c) => c.server === key);
    const fromPython = pythonOutcomes(servers[key].target, cases);
    fromPython.catch(() => {}); // awaited below; not unhandled if the Node side fails first
    /** @type {Map<number, ShapleyClient>} */
    const clients = new Map();
    /** @type {Record<string, any>} */
    const fromNode = {};
    try {
      for (const c of cases) {
        const size = c.maxMessageBytes ?? DEFAULT_BYTES;
        if (!clients.has(size)) {
          clients.set(size, new ShapleyClient(servers[key].target, { timeout: 120, maxMessageBytes: size }));
        }
        fromNode[c.name] = await nodeOutcome(/** @type {ShapleyClient} */ (clients.get(size)), c);
      }
    } finally {
      for (const client of clients.values()) client.close();
    }
    const python = await fromPython;
    for (const c of cases) {
      await s.test(c.name, () => {
        const node = fromNode[c.name];
        const py = python[c.name];
        assert.deepEqual(node, py, `${c.name}: Node ${JSON.stringify(node)} vs Python ${JSON.stringify(py)}`);
        assert.equal(decision(node), c.expect, `${c.name}: no longer the decision this case is about`);
      });
    }
  })));
});
