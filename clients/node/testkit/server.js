// @ts-check
'use strict';
/**
 * Start a real shapley-svc server for tests (port 0), wait until it is SERVING, stop it after.
 *
 * The command is SHAPLEY_SVC_COMMAND (split on whitespace, e.g. "python -m shapley_svc"), else
 * `shapley-svc` on PATH, else ../../.venv/bin/shapley-svc relative to clients/node.
 * SHAPLEY_SVC_ARTIFACT, when set, is passed on as --artifact. Other SHAPLEY_SVC_* variables of
 * the caller's environment are not passed on, so they cannot change the test server.
 * SHAPLEY_SVC_START_TIMEOUT (seconds, default 480) bounds the warm-up wait.
 */

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const PACKAGE_ROOT = path.resolve(__dirname, '..');
const REPO_VENV_COMMAND = path.resolve(PACKAGE_ROOT, '..', '..', '.venv', 'bin', 'shapley-svc');

/** @param {string} name */
function onPath(name) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** @returns {string[]} the command and its leading arguments */
function serverCommand() {
  const configured = (process.env.SHAPLEY_SVC_COMMAND || '').trim();
  if (configured) return configured.split(/\s+/);
  const found = onPath('shapley-svc');
  if (found) return [found];
  if (fs.existsSync(REPO_VENV_COMMAND)) return [REPO_VENV_COMMAND];
  throw new Error(
    'shapley-svc not found: set SHAPLEY_SVC_COMMAND, put shapley-svc on PATH or install it in ' +
      `${REPO_VENV_COMMAND}`,
  );
}

/**
 * @typedef {{target: string, port: number, pid: number | undefined, log: () => string,
 *   stop: () => Promise<void>}} RunningServer
 */

/**
 * @param {{args?: string[], timeout?: number}} [options] extra `serve` flags; timeout in seconds
 * @returns {Promise<RunningServer>}
 */
async function startServer(options = {}) {
  const timeout = options.timeout ?? Number(process.env.SHAPLEY_SVC_START_TIMEOUT || 480);
  const [command, ...leading] = serverCommand();
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if (key.startsWith('SHAPLEY_SVC_')) delete env[key];
  }
  const args = [
    ...leading,
    'serve',
    '--address', '127.0.0.1:0',
    '--metrics-address', '',
    '--grace-seconds', '2',
    ...(process.env.SHAPLEY_SVC_ARTIFACT ? ['--artifact', process.env.SHAPLEY_SVC_ARTIFACT] : []),
    ...(options.args || []),
  ];
  const child = spawn(command, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  let port = 0;
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      fail(new Error(`shapley-svc not SERVING after ${timeout} s:\n${log}`));
    }, timeout * 1000);
    /** @param {Error} error */
    function fail(error) {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(error);
    }
    child.once('error', (error) => fail(new Error(`could not start ${command}: ${error.message}`)));
    exited.then(({ code, signal }) => {
      fail(new Error(`shapley-svc exited (code ${code}, signal ${signal}) before SERVING:\n${log}`));
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text) => {
      log += text;
      if (!port) {
        const listening = /listening on \S+:(\d+)/.exec(log);
        if (listening) port = Number(listening[1]);
      }
      // "listening on ... (NOT_SERVING while warming up)" also says SERVING: wait for this one.
      if (port && /\bSERVING after\b/.test(log)) {
        clearTimeout(timer);
        resolve(undefined);
      }
    });
  });

  return {
    target: `127.0.0.1:${port}`,
    port,
    pid: child.pid,
    log: () => log,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 15000);
      await exited;
      clearTimeout(killer);
    },
  };
}

module.exports = { startServer, serverCommand };
