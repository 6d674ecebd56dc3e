'use strict';
// `npm pack` / `npm publish` hooks: copy the repository's shapley.proto into the package
// (proto/shapley/v1/shapley.proto, found first at run time) and remove the copy afterwards.
// proto/google/rpc/ (the rich error model's messages) is committed and left alone.
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const source = path.resolve(root, '..', '..', 'protos', 'shapley', 'v1', 'shapley.proto');
const packed = path.join(root, 'proto', 'shapley');

if (process.argv[2] === 'copy') {
  fs.mkdirSync(path.join(packed, 'v1'), { recursive: true });
  fs.copyFileSync(source, path.join(packed, 'v1', 'shapley.proto'));
} else if (process.argv[2] === 'clean') {
  fs.rmSync(packed, { recursive: true, force: true });
} else {
  console.error('usage: node scripts/pack-proto.js copy|clean');
  process.exit(2);
}
