// node examples/quickstart.js  (server address: SHAPLEY_TARGET, default 127.0.0.1:50051)
const { ShapleyClient, ShapleyError } = require('@shapley/client');

async function main() {
  const client = new ShapleyClient(process.env.SHAPLEY_TARGET || '127.0.0.1:50051', { timeout: 60 });

  // Your model and the rows it saw. Here: a made-up logistic model of 3 features.
  const sigmoid = (/** @type {number} */ z) => 1 / (1 + Math.exp(-z));
  const model = (/** @type {number[]} */ x) => sigmoid(2 * x[0] - x[1] + 0.5 * x[1] * x[2]);
  let seed = 42;
  const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647) * 2 - 1;
  const rows = Array.from({ length: 300 }, () => [random(), random(), random()]);
  const spec = { rows, predictions: rows.map(model), featureNames: ['age', 'income', 'debt'] };

  // Fit the context once (the same data always gives the same id, on any replica).
  const info = await client.createContext(spec);
  console.log(info.contextId, 'created:', info.created,
    'predicted fidelity:', info.outputs[0].predictedFidelity.toFixed(3));

  // Explain new rows. With their predictions, every row is exactly efficient.
  const query = [[0.5, -0.2, 0.1], [-0.8, 0.9, 0.3]];
  const e = await client.explain(spec, query, query.map(model));
  if (!e.singleOutput) throw new Error('1-D predictions give a single-output explanation');
  for (let i = 0; i < e.nRows; i++) {
    const { values, uncertainty, baseValue } = e.row(i);
    const terms = e.attributionNames.map((name, j) =>
      `${name} ${values[j] >= 0 ? '+' : ''}${values[j].toFixed(3)}±${uncertainty[j].toFixed(3)}`);
    console.log(`row ${i}: ${model(query[i]).toFixed(3)} = base ${baseValue.toFixed(3)}; ${terms.join(', ')}`);
  }
  // Efficiency: base value + attributions = the model's output, exactly (up to float rounding).
  const first = e.row(0);
  const total = first.baseValue + first.values.reduce((sum, v) => sum + v, 0);
  console.log(`row 0 adds up: ${first.baseValue.toFixed(3)} + ${
    first.values.map((v) => v.toFixed(3)).join(' + ')} = ${total.toFixed(3)} (the model: ${
    model(query[0]).toFixed(3)})`);

  // A big batch goes over ExplainStream, in chunks, reassembled in order.
  const batch = Array.from({ length: 5000 }, () => [random(), random(), random()]);
  const all = await client.explainStream(spec, batch, batch.map(model), { chunkRows: 2000 });
  console.log('streamed:', all.shape, all.values.constructor.name, 'base shape', all.baseShape);

  // Errors carry the gRPC status name and the field at fault.
  try {
    await client.explain(info.contextId, [[1, 2]]);
  } catch (error) {
    if (!(error instanceof ShapleyError)) throw error;
    console.log(error.code, error.field, '|', error.details);
  }
  client.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
