'use strict';
// Bearer tokens (and TLS, when openssl is there to make a certificate) against a real server.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { ShapleyClient, ShapleyError } = require('..');
const { startServer } = require('../testkit/server');
const { makeRows, model } = require('../testkit/data');

const TOKENS = ['alpha-7f3c9e1b', 'beta-0d52aa64'];

/** A self-signed certificate for 127.0.0.1, or null without openssl. */
function makeCertificate(dir) {
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', key, '-out', cert,
    ], { stdio: 'ignore' });
    return { key, cert };
  } catch {
    return null;
  }
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shapley-node-auth-'));
const certificate = makeCertificate(dir);
/** @type {Awaited<ReturnType<typeof startServer>>} */ let server;
// The certificate names localhost too: verify against that name rather than an IP (RFC 6066).
const channelOptions = certificate ? { 'grpc.ssl_target_name_override': 'localhost' } : {};
/** @type {ShapleyClient[]} */ const clients = [];

/** @param {object} [options] */
function connect(options = {}) {
  const tls = certificate ? { rootCerts: fs.readFileSync(certificate.cert) } : false;
  const client = new ShapleyClient(server.target, { tls, timeout: 60, channelOptions, ...options });
  clients.push(client);
  return client;
}

/** @param {string} code */
const isCode = (code) => (/** @type {any} */ error) => {
  assert.ok(error instanceof ShapleyError, String(error));
  assert.equal(error.code, code, error.message);
  return true;
};

before(async () => {
  const tokensFile = path.join(dir, 'tokens');
  fs.writeFileSync(tokensFile, `${TOKENS.join('\n')}\n`);
  const tlsArgs = certificate ? ['--tls-cert', certificate.cert, '--tls-key', certificate.key] : [];
  server = await startServer({ args: ['--tokens-file', tokensFile, ...tlsArgs] });
}, { timeout: 600_000 });

after(async () => {
  for (const client of clients) client.close();
  if (server) await server.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('no token or a wrong token is UNAUTHENTICATED', async () => {
  const anonymous = connect();
  await assert.rejects(anonymous.serverInfo(), isCode('UNAUTHENTICATED'));
  await assert.rejects(anonymous.listContexts(), isCode('UNAUTHENTICATED'));
  await assert.rejects(anonymous.explainStream('ctx-whatever', [[1, 2]]), isCode('UNAUTHENTICATED'));
  const wrong = connect({ token: 'gamma-not-a-token' });
  await assert.rejects(wrong.serverInfo(), isCode('UNAUTHENTICATED'));
  await assert.rejects(wrong.getContext('ctx-whatever'), isCode('UNAUTHENTICATED'));
  // Health checks are open to all (load balancers carry no token).
  assert.equal(await anonymous.health(), 'SERVING');
});

test('the right token is accepted', async () => {
  for (const token of TOKENS) {
    const client = connect({ token });
    const info = await client.serverInfo();
    assert.ok(info.limits.maxExplainRows > 0);
    const listed = await client.listContexts();
    assert.ok(Array.isArray(listed.contexts));
  }
  // A function is called for each request (tokens that rotate).
  let calls = 0;
  const rotating = connect({ token: () => { calls += 1; return TOKENS[1]; } });
  await rotating.serverInfo();
  await assert.rejects(rotating.getContext('ctx-0'), isCode('NOT_FOUND'));
  assert.equal(calls, 2);
});

test('a token function that never settles counts against the deadline: DEADLINE_EXCEEDED, not a hang', async () => {
  const stuck = connect({ token: () => new Promise(() => {}), timeout: 0.5 });
  const started = Date.now();
  await assert.rejects(stuck.serverInfo(), isCode('DEADLINE_EXCEEDED'));
  await assert.rejects(stuck.health(), isCode('DEADLINE_EXCEEDED'));
  await assert.rejects(stuck.waitForServing({ timeout: 1, interval: 0.1 }), isCode('DEADLINE_EXCEEDED'));
  assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
});

test('a token gRPC metadata cannot carry is refused naming token, before sending, without quoting it', async () => {
  // gRPC's own refusal was a plain Error quoting the whole header, secret included.
  const bad = {
    'a trailing newline (read from a file)': `${TOKENS[0]}\n`,
    'a trailing CRLF': `${TOKENS[0]}\r\n`,
    'a tab': `${TOKENS[0]}\tx`,
    'a non-ASCII letter': `${TOKENS[0]}\u00e9`,
  };
  for (const [name, token] of Object.entries(bad)) {
    for (const [how, supplied] of Object.entries({
      string: token, function: () => token, 'async function': async () => token,
    })) {
      const client = connect({ token: supplied });
      const calls = {
        serverInfo: () => client.serverInfo(),
        getContext: () => client.getContext('ctx-whatever'),
        explainStream: () => client.explainStream('ctx-whatever', [[1, 2]], null, { chunkRows: 1 }),
        health: () => client.health(),
      };
      for (const [method, call] of Object.entries(calls)) {
        const refused = await call().then(() => assert.fail(`${name}, ${how}, ${method}: taken`),
          (/** @type {any} */ e) => e);
        assert.ok(refused instanceof ShapleyError, `${name}, ${how}, ${method}: ${refused}`);
        assert.equal(refused.code, 'INVALID_ARGUMENT', `${name}, ${how}, ${method}`);
        assert.equal(refused.field, 'token', `${name}, ${how}, ${method}`);
        assert.match(refused.details, /^token: has a character gRPC metadata cannot carry/);
        assert.ok(!refused.message.includes(TOKENS[0]), `${name}, ${how}, ${method}: quotes the token`);
        assert.equal(refused.metadata, null, `${name}, ${how}, ${method}: sent`);
      }
    }
  }
  const trailing = await connect({ token: `${TOKENS[0]}\n` }).serverInfo().catch((/** @type {any} */ e) => e);
  assert.match(trailing.details, /U\+000A at index 14 of 15 \(a token read from a file keeps its line break: trim it\)$/);
  const notText = await connect({ token: /** @type {any} */ (() => 42) }).serverInfo().catch((/** @type {any} */ e) => e);
  assert.equal(notText.field, 'token');
  // Waiting for the server cannot mend it: refused at once, not after the timeout.
  const started = Date.now();
  await assert.rejects(connect({ token: `${TOKENS[0]}\n` }).waitForServing({ timeout: 60 }),
    (/** @type {any} */ e) => e instanceof ShapleyError && e.field === 'token');
  assert.ok(Date.now() - started < 10_000, `${Date.now() - started} ms`);
  // The same token, trimmed, is accepted.
  await connect({ token: `${TOKENS[0]}\n`.trim() }).serverInfo();
});

test('a context streamed in blocks (CreateContextStream) carries the token', async () => {
  const rows = makeRows(400, 4, 21);
  const spec = { rows, predictions: model(rows) };
  // 4 KiB messages: the 16 KB context goes in blocks.
  const limit = { maxMessageBytes: 4096 };
  const anonymous = connect(limit);
  await assert.rejects(anonymous.createContext(spec), isCode('UNAUTHENTICATED'));
  const client = connect({ token: TOKENS[0], ...limit });
  let unaryCreates = 0;
  const unary = client._unary.bind(client);
  client._unary = (method, ...rest) => {
    if (method === 'CreateContext') unaryCreates += 1;
    return unary(method, ...rest);
  };
  const info = await client.createContext(spec);
  assert.equal(unaryCreates, 0);
  assert.equal(info.nRows, 400);
  assert.equal((await client.getContext(info.contextId)).contextId, info.contextId);
});

test('TLS: the server certificate is verified against rootCerts', {
  skip: certificate ? false : 'openssl could not make a certificate: the server runs without TLS',
}, async () => {
  // Without the self-signed root the handshake must fail.
  const untrusted = new ShapleyClient(server.target, {
    tls: true, token: TOKENS[0], timeout: 10, channelOptions,
  });
  clients.push(untrusted);
  await assert.rejects(untrusted.serverInfo(), isCode('UNAVAILABLE'));
  await connect({ token: TOKENS[0] }).serverInfo();
});
