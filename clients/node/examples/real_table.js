// node examples/real_table.js  (server address: SHAPLEY_TARGET, default 127.0.0.1:50051)
// A table with missing values (NaN) and categorical columns sent as integer codes.
const { ShapleyClient } = require('@shapley/client');

const REGIONS = ['north', 'south', 'east', 'west']; // code c stands for REGIONS[c]
const REGION_EFFECT = [0.5, -0.5, 0, 1];

/** Your model; here a made-up one that reads a missing income as a low one. @param {number[]} x */
function model([income, region, employed]) {
  const score = (Math.log(Number.isNaN(income) ? 20000 : income) - 10.5) * 2
    + (REGION_EFFECT[region] ?? 0) + 1.5 * employed;
  return 1 / (1 + Math.exp(-score));
}

async function main() {
  const client = new ShapleyClient(process.env.SHAPLEY_TARGET || '127.0.0.1:50051', { timeout: 60 });
  let seed = 7;
  const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
  // Rows: income (NaN when not reported), region code, employed (0/1).
  const rows = Array.from({ length: 500 }, () => [
    random() < 0.15 ? NaN : 20000 + 60000 * random(),
    Math.floor(4 * random()),
    random() < 0.8 ? 1 : 0,
  ]);
  const spec = {
    rows,
    predictions: rows.map(model),
    featureNames: ['income', 'region', 'employed'],
    categoricalColumns: ['region', 'employed'], // by name or index: codes, not magnitudes
  };
  const info = await client.createContext(spec);
  console.log('categorical columns:', info.categoricalColumns);

  // Code 4 was never seen in the context: an unseen category, not an error.
  const query = [[NaN, 3, 1], [52000, 1, 0], [31000, 4, 1]];
  const e = await client.explain(spec, query, query.map(model));
  if (!e.singleOutput) throw new Error('1-D predictions give a single-output explanation');
  query.forEach((x, i) => {
    const { values, baseValue } = e.row(i);
    const shown = [`income=${x[0].toFixed(0)}`, `region=${REGIONS[x[1]] ?? `code ${x[1]}`}`,
      `employed=${x[2]}`].map((text, j) => `${text} ${values[j] >= 0 ? '+' : ''}${values[j].toFixed(3)}`);
    console.log(`p=${model(x).toFixed(3)} base=${baseValue.toFixed(3)} | ${shown.join(', ')}`);
  });
  client.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
