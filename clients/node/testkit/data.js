// @ts-check
'use strict';
/** Small deterministic test data: rows ~ N(0, 1), predictions = a sigmoid of a simple function. */

/** @param {number} seed */
function random(seed) {
  let state = seed >>> 0;
  const uniform = () => {
    // mulberry32
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => {
    const u = 1 - uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * uniform());
  };
}

/**
 * @param {number} n
 * @param {number} d
 * @param {number} [seed]
 * @returns {number[][]}
 */
function makeRows(n, d, seed = 1) {
  const normal = random(seed);
  return Array.from({ length: n }, () => Array.from({ length: d }, normal));
}

/** @param {number} z */
const sigmoid = (z) => 1 / (1 + Math.exp(-z));

/** The "model": P(y = 1 | x) = sigmoid(1.5 x0 - x1 + 0.8 x2 x3). @param {number[][]} rows */
function model(rows) {
  return rows.map((x) => sigmoid(1.5 * x[0] - x[1] + 0.8 * x[2] * x[3]));
}

module.exports = { makeRows, model, sigmoid };
