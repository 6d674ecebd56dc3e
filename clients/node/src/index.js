// @ts-check
'use strict';
/**
 * Thin Node.js client of shapley-svc (gRPC service `shapley.v1.Shapley`).
 *
 * Everything is Promise based. Arrays go in as nested JS arrays (`number[][]`) or as
 * `{data, shape}` with a flat row-major Float64Array / Float32Array (NaN in rows: a missing
 * value); answers come back as flat Float64Arrays plus their shapes (see {@link Explanation}).
 *
 * The wire contract is loaded at run time from `shapley.proto`: the `proto` option, else the copy
 * packed into the package (`proto/shapley/v1/shapley.proto`, written by `npm pack`), else the
 * repository's `protos/shapley/v1/shapley.proto` (two levels above this package).
 */

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PACKAGE_ROOT = path.resolve(__dirname, '..');
// ListContexts' page_size is an int32; the server caps each page by its message limit.
const AS_MANY_AS_FIT = 2 ** 31 - 1;
const PROTO_RELATIVE = path.join('shapley', 'v1', 'shapley.proto');
/** Where the .proto is looked for when no `proto` option is given, first match wins. */
const DEFAULT_PROTO_PATHS = [
  path.join(PACKAGE_ROOT, 'proto', PROTO_RELATIVE),
  path.resolve(PACKAGE_ROOT, '..', '..', 'protos', PROTO_RELATIVE),
];
/** google.rpc.Status and BadRequest (trimmed from googleapis), shipped in the package. */
const RICH_STATUS_PROTOS = ['status.proto', 'error_details.proto']
  .map((name) => path.join(PACKAGE_ROOT, 'proto', 'google', 'rpc', name));
const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
const HEALTH_CHECK_METHOD = '/grpc.health.v1.Health/Check';
const SERVICE_NAME = 'shapley.v1.Shapley';
const LITTLE_ENDIAN = os.endianness() === 'LE';
const DEFAULT_CHUNK_ROWS = 1000;
const UINT64_LIMIT = 2n ** 64n;
/** The server's default message limit (`shapley-svc serve --max-message-bytes`). */
const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_ATTEMPTS = 5;
// Share of maxMessageBytes a context message may fill: the Python client's threshold, leaving
// headroom under the server's limit.
const MESSAGE_FILL = 0.9;
// A spec's size is measured with its tensors' data left out; the data then adds its own bytes
// and lengthens five length prefixes (the request's context, the two tensors, their two data
// fields) by at most 9 bytes each (a varint takes at most 10).
const DATA_FRAMING_BYTES = 5 * 9;
/** The request fields that carry tensors, as the server names them (see _checkSize). */
const TENSOR_FIELDS = ['rows', 'predictions', 'outputs'];
const CONTEXT_TENSOR_FIELDS = ['rows', 'predictions'];
/** What to do about a request over maxMessageBytes, by method and field (see _checkSize). */
const OVERSIZE_HINTS = /** @type {Record<string, string>} */ ({
  'Explain rows': ': explainStream sends any number of rows, in chunks that fit',
  'Explain predictions': ': explainStream sends any number of rows, in chunks that fit',
  'Calibrate outputs': ': a smaller budget',
  'ExplainStream rows': ': one row per message is the least explainStream sends',
  'ExplainStream predictions': ': one row per message is the least explainStream sends',
});

/** @type {Map<string, any>} */
const serviceCache = new Map();

/**
 * What re-creates a context that calibrate() returned: the context it was calibrated from (a
 * spec, another calibrated context, or an id) and its Calibrate request less the context id
 * (budget, seed, the model's outputs and, when the surrogates were refitted, the encoded spec,
 * so that re-creation refits again: the same id), keyed by the object calibrate() resolved to;
 * with the ids re-creation must give again: `baseId`, the context it was calibrated from, and
 * `id`, its own. `step`: how many calibrations lead to it (1 when it was calibrated from a spec
 * or an id; one more than its base's when calibrated from a calibrated context).
 * Held here rather than per client, like the data a Python Context carries: any client can
 * re-create it.
 * @type {WeakMap<object, Calibration>}
 */
const calibrations = new WeakMap();

/**
 * The errors that refuse a re-created context coming back under another id, and where it did
 * (see recreationError). Such an error is never answered by re-creating again.
 * @type {WeakMap<ShapleyError, Mismatch>}
 */
const mismatches = new WeakMap();

/**
 * @typedef {Float64Array | Float32Array} FloatArray
 * @typedef {{data: ArrayLike<number>, shape: number[]}} FlatArray
 * @typedef {number[] | number[][] | FloatArray | FlatArray} ArrayInput
 * @typedef {{rows: ArrayInput, predictions: ArrayInput, background?: number[],
 *   featureNames?: string[], randomState?: number | bigint | string,
 *   groups?: Record<string, ArrayLike<number>> | Map<any, ArrayLike<number>>
 *     | [any, ArrayLike<number>][], categoricalColumns?: (number | string)[]}} ContextSpec
 * @typedef {{rootCerts?: Buffer | null, privateKey?: Buffer | null, certChain?: Buffer | null}} TlsFiles
 * @typedef {{tls?: boolean | TlsFiles, token?: string | (() => string | Promise<string>),
 *   timeout?: number, proto?: string, channelOptions?: Record<string, any>,
 *   maxMessageBytes?: number, maxAttempts?: number}} ClientOptions
 * @typedef {(rows: number[][], flat: {data: Float64Array, shape: number[]}) =>
 *   ArrayInput | Promise<ArrayInput>} Model
 * @typedef {{timeout?: number, outputDtype?: 'float64' | 'float32', model?: Model,
 *   budget?: number, randomState?: number | bigint | string, poolRows?: boolean}} CallOptions
 * @typedef {CallOptions & {chunkRows?: number}} StreamOptions
 * @typedef {{timeout?: number, budget?: number | null,
 *   randomState?: number | bigint | string | null, refit?: boolean | null}} CalibrationOptions
 * @typedef {{rows: Float64Array, shape: number[], budget: number, contextId: string,
 *   artifactVersion: string, proposalSha256: string}} CalibrationProposal
 * @typedef {{base: string | object, request: any, baseId: string, id: string, step: number}} Calibration
 * @typedef {{label: string | null, step: number, got: string, expected: string}} Mismatch
 * @typedef {{id: string | null, message: any, blockRows: number | null,
 *   pending: Promise<any> | null}} ContextEntry
 * @typedef {{field: string, description: string}} FieldViolation
 */

// --- errors --------------------------------------------------------------------------------

/**
 * The error every method rejects with: a gRPC status name, the server's message and the request
 * fields at fault.
 */
class ShapleyError extends Error {
  /**
   * @param {string} code gRPC status name, e.g. 'INVALID_ARGUMENT'
   * @param {string} details the server's message, e.g. "rows: has 5 features; context ... has 6"
   * @param {FieldViolation[]} [violations] the request fields at fault and their problems (the
   *   google.rpc.BadRequest of the server's rich status); `field` is the first one's
   * @param {{grpcCode?: number, metadata?: grpc.Metadata | null, cause?: unknown}} [extra]
   */
  constructor(code, details, violations = [], extra = {}) {
    super(`${code}: ${details}`, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = 'ShapleyError';
    this.code = code;
    this.details = details;
    this.violations = violations;
    /** @type {string | null} */
    this.field = violations.length ? violations[0].field : null;
    this.grpcCode = extra.grpcCode ?? /** @type {any} */ (grpc.status)[code] ?? grpc.status.UNKNOWN;
    this.metadata = extra.metadata ?? null;
  }
}

/** @type {{Status: protobuf.Type, BadRequest: protobuf.Type} | null} */
let richStatusTypes = null;

/**
 * A message decoded with field names as in the .proto (`type_url`, `field_violations`), or null
 * when the bytes are not one.
 * @param {protobuf.Type} type
 * @param {Uint8Array} bytes
 * @returns {any}
 */
function decodeOrNull(type, bytes) {
  try {
    return type.decode(bytes);
  } catch {
    return null;
  }
}

/**
 * The field violations of a call's rich status: the google.rpc.BadRequest details of the
 * google.rpc.Status in its `grpc-status-details-bin` trailer. None without one; what does not
 * decode is skipped, so that a garbled trailer still leaves the status code and message (this
 * runs in gRPC's callbacks: a throw would leave the call's Promise pending).
 * @param {grpc.Metadata | undefined} metadata the call's trailing metadata
 * @returns {FieldViolation[]}
 */
function fieldViolations(metadata) {
  const values = metadata && typeof metadata.get === 'function' ? metadata.get(STATUS_DETAILS_KEY) : [];
  if (!values.length || !Buffer.isBuffer(values[0])) return [];
  if (!richStatusTypes) {
    // keepCase: the bundled google/protobuf/any.proto keeps its names, so all of them do.
    const root = new protobuf.Root().loadSync(RICH_STATUS_PROTOS, { keepCase: true });
    richStatusTypes = {
      Status: root.lookupType('google.rpc.Status'),
      BadRequest: root.lookupType('google.rpc.BadRequest'),
    };
  }
  const status = decodeOrNull(richStatusTypes.Status, values[0]);
  /** @type {FieldViolation[]} */
  const violations = [];
  for (const detail of status ? status.details : []) {
    // An Any's type is the part of its URL after the last '/'.
    if (detail.type_url.slice(detail.type_url.lastIndexOf('/') + 1) !== 'google.rpc.BadRequest') continue;
    const badRequest = decodeOrNull(richStatusTypes.BadRequest, detail.value);
    for (const violation of badRequest ? badRequest.field_violations : []) {
      violations.push({ field: violation.field, description: violation.description });
    }
  }
  return violations;
}

/** @param {{code?: number, details?: string, message?: string, metadata?: grpc.Metadata}} status */
function errorFromStatus(status) {
  const numeric = typeof status.code === 'number' ? status.code : grpc.status.UNKNOWN;
  const name = /** @type {any} */ (grpc.status)[numeric] || 'UNKNOWN';
  const details = status.details ?? status.message ?? '';
  return new ShapleyError(name, details, fieldViolations(status.metadata), {
    grpcCode: numeric,
    metadata: status.metadata ?? null,
    cause: status instanceof Error ? status : undefined,
  });
}

/**
 * A request refused before it was sent, named like the server names its fields.
 * @param {string} field
 * @param {string} problem
 */
function localError(field, problem) {
  return new ShapleyError('INVALID_ARGUMENT', `${field}: ${problem}`, [{ field, description: problem }]);
}

/**
 * The refusal of a calibrated context that re-creation made again under another id than the one
 * the client recorded: another context, never explained against in its place (a server with
 * another artifact or version than the one that built it, or a spec changed since). NOT_FOUND,
 * field context_id, like the context it stands for: the server does not hold that one.
 * @param {string} contextId the calibrated context being re-created
 * @param {number} steps the calibrations that lead to it
 * @param {Mismatch} mismatch the step that gave another id: `label` (its spec, the context it
 *   was calibrated from) or else calibration `step` of `steps`
 */
function recreationError(contextId, steps, mismatch) {
  const what = mismatch.label ?? `calibration ${mismatch.step} of ${steps}`;
  const problem = `${contextId} is not held by this server, and what the client keeps to create ` +
    `it again makes another context here: ${what} gave ${mismatch.got}, not ${mismatch.expected} ` +
    '(a server with another artifact or version than the one that built it, or a spec changed ' +
    'since); create or calibrate it again to explain against this server';
  const error = new ShapleyError('NOT_FOUND', `context_id: ${problem}`,
    [{ field: 'context_id', description: problem }]);
  mismatches.set(error, mismatch);
  return error;
}

// --- arrays --------------------------------------------------------------------------------

/**
 * The refusal of an array entry that is not a number, at `where` (e.g. `[0][1]`, `data[4]`).
 * @param {string} field
 * @param {string} where
 * @param {unknown} value
 */
function notANumber(field, where, value) {
  return localError(field, `${where} is ${value === null ? 'null' : typeof value}, ` +
    'not a number (a missing value is NaN)');
}

/**
 * A plain array's entries as a Float64Array, each checked to be a number: `null`, a string or
 * a bigint is refused naming its index (`${prefix}[i]`), never coerced.
 * @param {unknown[]} values
 * @param {string} field
 * @param {string} prefix
 * @returns {Float64Array}
 */
function numbers(values, field, prefix) {
  const data = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    if (typeof value !== 'number') throw notANumber(field, `${prefix}[${i}]`, value);
    data[i] = value;
  }
  return data;
}

/**
 * Normalize an array argument to a flat typed array and its shape.
 * @param {any} input
 * @param {string} field
 * @param {number[]} ndims allowed numbers of axes
 * @returns {{data: FloatArray, shape: number[]}}
 */
function toArray(input, field, ndims) {
  if (input == null) throw localError(field, 'is required');
  /** @type {FloatArray} */ let data;
  /** @type {number[]} */ let shape;
  if (input instanceof Float64Array || input instanceof Float32Array) {
    data = input;
    shape = [input.length];
  } else if (Array.isArray(input)) {
    if (input.length === 0) throw localError(field, 'is empty');
    if (Array.isArray(input[0]) || ArrayBuffer.isView(input[0])) {
      const n = input.length;
      const d = /** @type {ArrayLike<number>} */ (input[0]).length;
      data = new Float64Array(n * d);
      for (let i = 0; i < n; i++) {
        const row = /** @type {ArrayLike<number>} */ (input[i]);
        if (!Array.isArray(row) && !ArrayBuffer.isView(row)) {
          const kind = row === null ? 'null' : typeof row;
          throw localError(field, `row ${i} is ${kind}, not an array of ${d} numbers like row 0`);
        }
        if (row.length !== d) {
          throw localError(field, `row ${i} has ${row.length} entries; row 0 has ${d}`);
        }
        for (let j = 0; j < d; j++) {
          const value = row[j];
          if (typeof value !== 'number') throw notANumber(field, `[${i}][${j}]`, value);
          data[i * d + j] = value;
        }
      }
      shape = [n, d];
    } else {
      data = numbers(input, field, '');
      shape = [input.length];
    }
  } else if (typeof input === 'object' && input.data != null && Array.isArray(input.shape)) {
    shape = input.shape.map(Number);
    if (input.data instanceof Float64Array || input.data instanceof Float32Array) {
      data = input.data;
    } else if (input.data instanceof BigInt64Array || input.data instanceof BigUint64Array) {
      throw localError(field, `data is a ${input.data.constructor.name}, whose entries are ` +
        'bigints, not numbers: pass a Float64Array, Float32Array or number[]');
    } else if (Array.isArray(input.data)) {
      // Checked entry by entry, as nested arrays are: Float64Array.from would take null as 0
      // and a string as NaN (a missing value), and throw a TypeError on a bigint.
      data = numbers(input.data, field, 'data');
    } else if (ArrayBuffer.isView(input.data)) {
      data = Float64Array.from(/** @type {ArrayLike<number>} */ (input.data));
    } else {
      throw localError(field, 'data must be a Float64Array, Float32Array or number[]');
    }
    for (const axis of shape) {
      if (!Number.isInteger(axis) || axis < 1) {
        throw localError(field, `shape ${JSON.stringify(input.shape)} has an axis below 1`);
      }
    }
    const count = shape.reduce((a, b) => a * b, 1);
    if (count !== data.length) {
      throw localError(field, `shape ${JSON.stringify(shape)} needs ${count} values; data has ${data.length}`);
    }
  } else {
    throw localError(field, 'must be a nested array, a Float64Array or {data, shape}');
  }
  if (!ndims.includes(shape.length)) {
    const want = ndims.map((k) => `${k}-D`).join(' or ');
    throw localError(field, `must be ${want}; got shape ${JSON.stringify(shape)}`);
  }
  return { data, shape };
}

/** @param {FloatArray} array */
function littleEndianBytes(array) {
  if (LITTLE_ENDIAN) return Buffer.from(array.buffer, array.byteOffset, array.byteLength);
  const bytes = Buffer.allocUnsafe(array.byteLength);
  const float32 = array instanceof Float32Array;
  for (let i = 0; i < array.length; i++) {
    if (float32) bytes.writeFloatLE(array[i], 4 * i);
    else bytes.writeDoubleLE(array[i], 8 * i);
  }
  return bytes;
}

/**
 * @param {FloatArray} data
 * @param {number[]} shape
 */
function encodeTensor(data, shape) {
  return {
    dtype: data instanceof Float32Array ? 'DTYPE_FLOAT32' : 'DTYPE_FLOAT64',
    shape,
    data: littleEndianBytes(data),
  };
}

/**
 * Decode a response tensor into a fresh typed array (always a copy: gRPC buffers are shared).
 * @param {any} tensor
 * @param {string} field
 * @returns {{data: FloatArray, shape: number[]}}
 */
function decodeTensor(tensor, field) {
  if (!tensor) throw new ShapleyError('INTERNAL', `${field}: missing from the server's answer`);
  const float32 = tensor.dtype === 'DTYPE_FLOAT32' || tensor.dtype === 1;
  const itemsize = float32 ? 4 : 8;
  /** @type {number[]} */ const shape = tensor.shape.map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  /** @type {Buffer} */ const bytes = tensor.data;
  if (bytes.length !== count * itemsize) {
    throw new ShapleyError(
      'INTERNAL',
      `${field}: the server sent ${bytes.length} bytes for shape ${JSON.stringify(shape)}`,
    );
  }
  const data = float32 ? new Float32Array(count) : new Float64Array(count);
  if (LITTLE_ENDIAN) {
    new Uint8Array(data.buffer).set(bytes);
  } else {
    for (let i = 0; i < count; i++) {
      data[i] = float32 ? bytes.readFloatLE(4 * i) : bytes.readDoubleLE(8 * i);
    }
  }
  return { data, shape };
}

/**
 * Nested JS arrays from a flat row-major array.
 * @param {ArrayLike<number>} data
 * @param {number[]} shape
 * @param {number} [offset]
 * @returns {any}
 */
function nest(data, shape, offset = 0) {
  if (shape.length === 0) return data[offset];
  const [length, ...rest] = shape;
  const stride = rest.reduce((a, b) => a * b, 1);
  const out = new Array(length);
  for (let i = 0; i < length; i++) {
    out[i] = rest.length === 0 ? data[offset + i] : nest(data, rest, offset + i * stride);
  }
  return out;
}

// --- results -------------------------------------------------------------------------------

/**
 * Attributions of m rows: `values` and `uncertainty` are flat row-major arrays of shape
 * `shape` = [m, d] (single-output context) or [m, d, K]; `baseValues` has `baseShape` = [m] or
 * [m, K].
 */
class Explanation {
  /**
   * @param {{contextId: string, values: FloatArray, shape: number[], baseValues: FloatArray,
   *   baseShape: number[], uncertainty: FloatArray, attributionNames: string[],
   *   featureNames: string[], context: any, artifactVersion: string, modelRows?: number}} parts
   */
  constructor(parts) {
    this.contextId = parts.contextId;
    this.values = parts.values;
    this.shape = parts.shape;
    this.baseValues = parts.baseValues;
    this.baseShape = parts.baseShape;
    this.uncertainty = parts.uncertainty;
    /** What is attributed, along the values' second axis: the groups, or the features. */
    this.attributionNames = parts.attributionNames;
    /** The names of the rows' columns (the context's features). */
    this.featureNames = parts.featureNames;
    /** The context's info (diagnostics), as returned by getContext. */
    this.context = parts.context;
    this.artifactVersion = parts.artifactVersion;
    /** Rows of the caller's model used per explained row: 0 zero-shot, > 0 refined. */
    this.modelRows = parts.modelRows ?? 0;
  }

  /** Number of explained rows (m). */
  get nRows() {
    return this.shape[0];
  }

  /** Number of features (d): the rows' columns. */
  get nFeatures() {
    return this.featureNames && this.featureNames.length ? this.featureNames.length : this.shape[1];
  }

  /**
   * Number of attributions per row (P), along the values' second axis: d without groups, the
   * number of groups with them (nFeatures gave P, where the README and types say d).
   */
  get nAttributions() {
    return this.shape[1];
  }

  /** True when the context's predictions were 1-D: there is no K axis. */
  get singleOutput() {
    return this.shape.length === 2;
  }

  /**
   * One row as plain JS values: single output -> values: number[d], baseValue: number;
   * multi-output -> values: number[d][K], baseValue: number[K]. `uncertainty` is shaped like
   * `values`.
   * @param {number} i
   */
  row(i) {
    if (!Number.isInteger(i) || i < 0 || i >= this.nRows) {
      throw new RangeError(`row ${i} is outside [0, ${this.nRows})`);
    }
    const rest = this.shape.slice(1);
    const stride = rest.reduce((a, b) => a * b, 1);
    const baseRest = this.baseShape.slice(1);
    const baseStride = baseRest.reduce((a, b) => a * b, 1);
    return {
      values: nest(this.values, rest, i * stride),
      uncertainty: nest(this.uncertainty, rest, i * stride),
      baseValue: nest(this.baseValues, baseRest, i * baseStride),
    };
  }

  /** Everything as nested JS arrays. */
  toNested() {
    return {
      values: nest(this.values, this.shape),
      baseValues: nest(this.baseValues, this.baseShape),
      uncertainty: nest(this.uncertainty, this.shape),
    };
  }
}

/**
 * Reassemble the responses of one call (one for Explain, one per chunk for ExplainStream).
 * @param {any[]} responses
 * @param {number} totalRows
 */
function assemble(responses, totalRows) {
  if (responses.length === 0) {
    throw new ShapleyError('INTERNAL', 'the server sent no answer');
  }
  const first = responses[0];
  const parts = responses.map((response) => ({
    firstRow: Number(response.firstRow || 0),
    values: decodeTensor(response.values, 'values'),
    baseValues: decodeTensor(response.baseValues, 'base_values'),
    uncertainty: decodeTensor(response.uncertainty, 'uncertainty'),
  }));
  const rest = parts[0].values.shape.slice(1);
  const baseRest = parts[0].baseValues.shape.slice(1);
  const stride = rest.reduce((a, b) => a * b, 1);
  const baseStride = baseRest.reduce((a, b) => a * b, 1);
  if (parts.length === 1 && parts[0].values.shape[0] === totalRows) {
    const only = parts[0];
    return explanation(first, only.values.data, only.values.shape, only.baseValues.data,
      only.baseValues.shape, only.uncertainty.data);
  }
  const Ctor = /** @type {any} */ (parts[0].values.data.constructor);
  const values = new Ctor(totalRows * stride);
  const uncertainty = new Ctor(totalRows * stride);
  const baseValues = new Ctor(totalRows * baseStride);
  let expected = 0;
  for (const part of parts) {
    const rows = part.values.shape[0];
    if (part.firstRow !== expected || JSON.stringify(part.values.shape.slice(1)) !== JSON.stringify(rest)) {
      throw new ShapleyError(
        'INTERNAL',
        `the server's chunk at first_row ${part.firstRow} (shape ${JSON.stringify(part.values.shape)}) ` +
          `does not follow row ${expected}`,
      );
    }
    values.set(part.values.data, part.firstRow * stride);
    uncertainty.set(part.uncertainty.data, part.firstRow * stride);
    baseValues.set(part.baseValues.data, part.firstRow * baseStride);
    expected += rows;
  }
  if (expected !== totalRows) {
    throw new ShapleyError('INTERNAL', `the server answered ${expected} rows of ${totalRows}`);
  }
  return explanation(first, values, [totalRows, ...rest], baseValues, [totalRows, ...baseRest],
    uncertainty);
}

/**
 * @param {any} first the first (or only) ExplainResponse: the context and artifact
 * @param {FloatArray} values
 * @param {number[]} shape
 * @param {FloatArray} baseValues
 * @param {number[]} baseShape
 * @param {FloatArray} uncertainty
 */
function explanation(first, values, shape, baseValues, baseShape, uncertainty) {
  const context = first.context || null;
  return new Explanation({
    contextId: first.contextId,
    values,
    shape,
    baseValues,
    baseShape,
    uncertainty,
    // With groups, answers name the groups (attributionNames); without, the features.
    attributionNames: context
      ? (context.attributionNames && context.attributionNames.length
        ? context.attributionNames : context.featureNames)
      : [],
    featureNames: context ? context.featureNames : [],
    context,
    artifactVersion: first.artifactVersion,
    modelRows: Number(first.modelRows || 0),
  });
}

// --- the proto -----------------------------------------------------------------------------

/** @param {string | undefined} protoPath */
function resolveProto(protoPath) {
  if (protoPath) return path.resolve(protoPath);
  const found = DEFAULT_PROTO_PATHS.find((candidate) => fs.existsSync(candidate));
  if (!found) {
    throw new Error(
      `shapley.proto not found (looked in ${DEFAULT_PROTO_PATHS.join(', ')}); pass the proto option`,
    );
  }
  return found;
}

/** @param {string} protoFile */
function loadService(protoFile) {
  let service = serviceCache.get(protoFile);
  if (!service) {
    const definition = protoLoader.loadSync(protoFile, {
      keepCase: false,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const loaded = /** @type {any} */ (grpc.loadPackageDefinition(definition));
    service = loaded.shapley.v1.Shapley;
    serviceCache.set(protoFile, service);
  }
  return service;
}

// --- health (hand-encoded: grpc.health.v1 is two one-field messages) -----------------------

const HEALTH_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

/** @param {{service: string}} request */
function encodeHealthRequest(request) {
  const name = Buffer.from(request.service || '', 'utf8');
  if (name.length === 0) return Buffer.alloc(0);
  const header = [0x0a];
  for (let n = name.length; ; n >>>= 7) {
    if (n < 0x80) {
      header.push(n);
      break;
    }
    header.push((n & 0x7f) | 0x80);
  }
  return Buffer.concat([Buffer.from(header), name]);
}

/** @param {Buffer} bytes */
function decodeHealthResponse(bytes) {
  let status = 0;
  let i = 0;
  while (i < bytes.length) {
    const key = bytes[i++];
    let value = 0;
    for (let shift = 0; i < bytes.length; shift += 7) {
      const byte = bytes[i++];
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) break;
    }
    if (key === 0x08) status = value;
    else if ((key & 7) === 2) i += value; // a length-delimited field this client does not know
  }
  return HEALTH_STATUS[status] || String(status);
}

// --- the client ----------------------------------------------------------------------------

/**
 * A value as a refusal quotes it: a string quoted, a bigint with its `n`, an array or another
 * object as JSON (`[5]`, not the `5` it would print as).
 * @param {unknown} value
 */
function shown(value) {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (value !== null && typeof value === 'object') {
    try {
      return JSON.stringify(value) ?? String(value);
    } catch {
      return String(value); // a bigint inside, or a cycle
    }
  }
  return String(value);
}

/** @param {any} contextOrId */
function isSpec(contextOrId) {
  return contextOrId != null && typeof contextOrId === 'object' && 'rows' in contextOrId;
}

/**
 * A seed as the decimal text of a uint64, or a local refusal naming `field`.
 * @param {number | bigint | string} seed
 * @param {string} field
 */
function uint64Text(seed, field) {
  const text = typeof seed === 'bigint' || typeof seed === 'number' ? String(seed) : seed;
  if (typeof text !== 'string' || !/^\d+$/.test(text) || BigInt(text) >= UINT64_LIMIT
    || (typeof seed === 'number' && !Number.isSafeInteger(seed))) {
    throw localError(field, `must be a non-negative integer below 2^64; got ${shown(seed)}`);
  }
  return text;
}

/**
 * @param {ContextSpec} spec
 */
function encodeSpec(spec) {
  if (spec == null || typeof spec !== 'object') throw localError('context', 'is required');
  const rows = toArray(spec.rows, 'context.rows', [2]);
  const predictions = toArray(spec.predictions, 'context.predictions', [1, 2]);
  /** @type {any} */
  const message = {
    rows: encodeTensor(rows.data, rows.shape),
    predictions: encodeTensor(predictions.data, predictions.shape),
  };
  if (spec.background != null) {
    message.background = integerIndices(spec.background, 'context.background', '', 'row');
  }
  if (spec.featureNames != null) message.featureNames = Array.from(spec.featureNames, String);
  if (spec.randomState != null) {
    // The field is a uint64: protobufjs would encode anything else silently (-1, 'abc' and NaN
    // as 0, 2^64 + 1 as 1), so a bad seed would fit a context nobody asked for. The server's own
    // range, [0, 2^32), is the server's to check.
    message.randomState = uint64Text(spec.randomState, 'context.random_state');
  }
  if (spec.groups != null) {
    message.groups = groupEntries(spec.groups).map(([name, columns]) => (
      { name, columns: integerIndices(columns, 'context.groups', JSON.stringify(name), 'column') }));
  }
  if (spec.categoricalColumns != null) {
    message.categoricalColumns = categoricalIndices(spec.categoricalColumns, spec.featureNames,
      rows.shape[1]);
  }
  return message;
}

/**
 * Row or column indices as sent, each an integer number, as categorical columns are checked:
 * anything else (a bool, a numeric string, a nested array, a bigint, 1.5) is refused naming
 * `field` and its position, never coerced (Number(true) is 1, Number('5') 5, Number([7]) 7).
 * The range ([0, n) rows, [0, d) columns) is the server's to check.
 * @param {unknown} values
 * @param {string} field
 * @param {string} prefix where the array is, e.g. a group's name, '' for the field itself
 * @param {string} what 'row' or 'column'
 * @returns {number[]}
 */
function integerIndices(values, field, prefix, what) {
  /** @param {unknown} value */
  const described = (value) => {
    if (value === null) return 'null';
    if (Array.isArray(value)) return `an array (${JSON.stringify(value)})`;
    if (typeof value === 'object') {
      return value.constructor && value.constructor !== Object ? `a ${value.constructor.name}` : 'an object';
    }
    return shown(value);
  };
  if (values == null || typeof values === 'string'
    || typeof (/** @type {any} */ (values))[Symbol.iterator] !== 'function') {
    throw localError(field, `${prefix ? `${prefix} ` : ''}must be an array of ${what} indices ` +
      `(integers); got ${described(values)}`);
  }
  return Array.from(/** @type {Iterable<unknown>} */ (values), (index, i) => {
    if (typeof index !== 'number' || !Number.isInteger(index)) {
      throw localError(field, `${prefix}[${i}] must be a ${what} index (an integer); got ${described(index)}`);
    }
    return index;
  });
}

/**
 * Column indices of the categorical columns, from indices or names (names resolved against
 * `featureNames`, or the server's default names x0, x1, ... without them), sorted so that the
 * order they are listed in does not change the context id. Refused before sending: a name that
 * is not a feature's and what the wire's uint32 cannot carry exactly. An index beyond the
 * columns, or one listed twice, is the server's to refuse (field context.categorical_columns).
 * @param {(number | string)[]} columns
 * @param {string[] | undefined} featureNames
 * @param {number} d
 * @returns {number[]}
 */
function categoricalIndices(columns, featureNames, d) {
  const field = 'context.categorical_columns';
  if (typeof columns === 'string' || typeof columns[Symbol.iterator] !== 'function') {
    throw localError(field, 'must be an array of column indices or names');
  }
  const names = featureNames != null
    ? Array.from(featureNames, String)
    : Array.from({ length: d }, (_, j) => `x${j}`);
  return Array.from(columns, (column, i) => {
    if (typeof column === 'string') {
      const index = names.indexOf(column);
      if (index < 0) {
        throw localError(field, `[${i}] names column ${JSON.stringify(column)}, which is not a feature name`);
      }
      return index;
    }
    if (typeof column !== 'number' || !Number.isInteger(column) || column < 0 || column >= 2 ** 32) {
      throw localError(field, `[${i}] must be a column index (an integer in [0, 2^32)) or a name; got ${shown(column)}`);
    }
    return column;
  }).sort((a, b) => a - b);
}

/**
 * Resolves once a call whose write buffer was full can take more (or has ended).
 * @param {any} call a client-streaming or bidirectional call
 * @returns {Promise<void>}
 */
function drained(call) {
  return new Promise((ready) => {
    const done = () => {
      call.off('drain', done);
      call.off('status', done);
      ready();
    };
    call.on('drain', done);
    call.on('status', done);
  });
}

/**
 * gRPC's service config retrying every Shapley call that fails UNAVAILABLE (a replica stopping
 * or killed, a proxy with no upstream), with exponential backoff: the same policy as the Python
 * client's. Every call is safe to retry: contexts are content-addressed and explanations have
 * no side effects.
 * @param {number} [maxAttempts] tries of a call, 1 to 5 (gRPC's cap); 1 turns retries off
 * @returns {object}
 */
function retryServiceConfig(maxAttempts = DEFAULT_MAX_ATTEMPTS) {
  if (maxAttempts <= 1) return {};
  return {
    methodConfig: [{
      name: [{ service: 'shapley.v1.Shapley' }],
      retryPolicy: {
        maxAttempts,
        initialBackoff: '0.1s',
        maxBackoff: '2s',
        backoffMultiplier: 2,
        retryableStatusCodes: ['UNAVAILABLE'],
      },
    }],
  };
}

/**
 * The groups as [name, columns] pairs, taken as the Python client takes them: an object or a Map
 * of group name to column indices, or an array of [name, columns] pairs. A Map went through
 * Object.entries as no group at all, and so did {}: the context was fitted without groups and
 * answered per feature, with no error (QA, 2026-12-06).
 * @param {any} groups
 * @returns {[string, any][]}
 */
function groupEntries(groups) {
  /** @type {[any, any][]} */
  let entries;
  if (groups instanceof Map) {
    entries = Array.from(groups.entries());
  } else if (Array.isArray(groups)) {
    groups.forEach((item, position) => {
      if (!Array.isArray(item) || item.length !== 2) {
        throw localError('context.groups',
          `item ${position} must be a [name, column indices] pair; got ${JSON.stringify(item)}`);
      }
    });
    entries = groups;
  } else if (typeof groups === 'object') {
    entries = Object.entries(groups);
  } else {
    throw localError('context.groups',
      `must map group names to column indices (an object or a Map, or an array of [name, ` +
      `indices] pairs); got a ${typeof groups}`);
  }
  if (entries.length === 0) throw localError('context.groups', 'must hold at least one group');
  return entries.map(([name, columns]) => [String(name), columns]);
}

/**
 * A timeout (seconds) past which a call has no deadline, as with Infinity: grpc-js cannot write
 * a deadline more than 1e8 hours ahead and throws in its own async code, an unhandled rejection
 * that ended the process (QA, 2026-12-06: timeout 1e12).
 */
const NO_DEADLINE_SECONDS = 1e10;

/**
 * Refuse a timeout that is not a number of seconds >= 0 (0: none), naming `timeout`: 'abc', NaN
 * and -1 meant no deadline, and '5' five seconds, silently.
 * @param {any} timeout
 */
function checkTimeout(timeout) {
  if (timeout == null) return;
  if (typeof timeout !== 'number' || Number.isNaN(timeout) || timeout < 0) {
    throw localError('timeout', `must be a number of seconds >= 0 (0 or Infinity: no deadline); got ${shown(timeout)}`);
  }
}

/** The longest delay Node's setTimeout keeps (a longer one fires at once). */
const MAX_TIMER_MS = 2147483647;

/**
 * `promise`, or DEADLINE_EXCEEDED when `deadline` (ms since the epoch) passes first.
 * @template T
 * @param {Promise<T>} promise
 * @param {number | undefined} deadline
 * @param {string} what
 * @returns {Promise<T>}
 */
function beforeDeadline(promise, deadline, what) {
  const left = deadline == null ? Infinity : deadline - Date.now();
  if (left > MAX_TIMER_MS) return promise;
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new ShapleyError('DEADLINE_EXCEEDED',
      `${what} had not settled when the call's deadline passed`)), Math.max(0, left));
  });
  return /** @type {Promise<T>} */ (Promise.race([promise, expired]).finally(() => clearTimeout(timer)));
}

class ShapleyClient {
  /**
   * @param {string} target host:port of the server, e.g. '127.0.0.1:50051'
   * @param {ClientOptions} [options]
   */
  constructor(target, options = {}) {
    const {
      tls = false, token, timeout, proto, channelOptions = {},
      maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES, maxAttempts = DEFAULT_MAX_ATTEMPTS,
    } = options;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 5) {
      throw new RangeError(`maxAttempts must be an integer in [1, 5]; got ${maxAttempts}`);
    }
    if (!Number.isInteger(maxMessageBytes) || maxMessageBytes < 1) {
      throw new RangeError(`maxMessageBytes must be a positive integer; got ${maxMessageBytes}`);
    }
    const Service = loadService(resolveProto(proto));
    let credentials;
    if (tls === false || tls == null) {
      credentials = grpc.credentials.createInsecure();
    } else if (tls === true) {
      credentials = grpc.credentials.createSsl();
    } else {
      credentials = grpc.credentials.createSsl(
        tls.rootCerts ?? null,
        tls.privateKey ?? null,
        tls.certChain ?? null,
      );
    }
    checkTimeout(timeout);
    this.target = target;
    this._token = token;
    this._timeout = timeout;
    this._maxMessageBytes = maxMessageBytes;
    /** @type {(request: any) => Buffer} */
    this._serializeCreateRequest = Service.service.CreateContext.requestSerialize;
    /** @type {Record<string, {requestSerialize: (request: any) => Buffer}>} */
    this._methods = Service.service;
    /** @type {WeakMap<object, ContextEntry>} */
    this._contexts = new WeakMap();
    /**
     * Re-creations of calibrated contexts in flight (see _recreate).
     * @type {WeakMap<object, Promise<string>>}
     */
    this._recalibrating = new WeakMap();
    this._stub = new Service(target, credentials, {
      // Requests over maxMessageBytes are refused before sending, naming the field (_checkSize):
      // gRPC's own refusal, on either side, names none. Answers are not capped on this side: the
      // server keeps its answers within its own limit.
      'grpc.max_receive_message_length': -1,
      'grpc.max_send_message_length': -1,
      'grpc.enable_retries': maxAttempts > 1 ? 1 : 0,
      'grpc.service_config': JSON.stringify(retryServiceConfig(maxAttempts)),
      // gRPC retries only a request it still holds: up to 256 KiB a call and 16 MiB in all
      // unless told, so a 4 MB CreateContext whose replica was killed failed at once.
      'grpc.per_rpc_retry_buffer_size': maxMessageBytes,
      'grpc.retry_buffer_size': Math.max(maxMessageBytes, 16 << 20),
      ...channelOptions,
    });
  }

  // --- plumbing ----------------------------------------------------------------------------

  /**
   * A call's metadata: the token, when there is one, as `authorization: Bearer <token>`. A token
   * gRPC metadata cannot carry (printable ASCII only) is refused naming the option, `token`,
   * without quoting it: gRPC's own error would be a plain Error quoting the secret.
   * @param {number} [deadline] the call's, in ms since the epoch
   * @returns {Promise<grpc.Metadata>}
   */
  async _metadata(deadline) {
    const metadata = new grpc.Metadata();
    // The token function's wait counts against the call's deadline: a provider that never
    // answered hung every call, timeout or not, and waitForServing past its own timeout.
    const provider = this._token;
    const token = typeof provider === 'function'
      ? await beforeDeadline(Promise.resolve().then(() => provider.call(this)), deadline,
        'the token function')
      : provider;
    if (!token) return metadata;
    if (typeof token !== 'string') {
      throw localError('token', `must be a string (or a function returning one); got a ${typeof token}`);
    }
    const illegal = /[^ -~]/.exec(token);
    if (illegal) {
      const code = /** @type {number} */ (illegal[0].codePointAt(0));
      const where = `U+${code.toString(16).toUpperCase().padStart(4, '0')} at index ${illegal.index} of ${token.length}`;
      const hint = /[\r\n]/.test(illegal[0]) ? ' (a token read from a file keeps its line break: trim it)' : '';
      throw localError('token', `has a character gRPC metadata cannot carry (printable ASCII only): ${where}${hint}`);
    }
    metadata.set('authorization', `Bearer ${token}`);
    return metadata;
  }

  /** @param {{timeout?: number} | undefined} options */
  _callOptions(options) {
    const timeout = options && options.timeout != null ? options.timeout : this._timeout;
    checkTimeout(timeout);
    if (timeout == null || timeout === 0 || timeout >= NO_DEADLINE_SECONDS) return {};
    return { deadline: Date.now() + timeout * 1000 };
  }

  /**
   * A call's options (its deadline fixed as it starts) and its metadata, the token's wait
   * counted against that deadline.
   * @param {{timeout?: number} | undefined} options
   * @returns {Promise<{metadata: grpc.Metadata, callOptions: {deadline?: number}}>}
   */
  async _prepared(options) {
    const callOptions = this._callOptions(options);
    return { metadata: await this._metadata(callOptions.deadline), callOptions };
  }

  /**
   * @param {string} method
   * @param {any} request
   * @param {{timeout?: number}} [options]
   * @returns {Promise<any>}
   */
  async _unary(method, request, options) {
    this._checkSize(method, request);
    const { metadata, callOptions } = await this._prepared(options);
    return new Promise((resolve, reject) => {
      this._stub[method](request, metadata, callOptions,
        (/** @type {any} */ error, /** @type {any} */ response) => {
          if (error) reject(errorFromStatus(error));
          else resolve(response);
        });
    });
  }

  /**
   * Refuse, before sending, a request of `method` over maxMessageBytes: RESOURCE_EXHAUSTED naming
   * the field that carries the most bytes (`blame.field` instead when given), as the server
   * names a field over its own limits. A request over the server's limit would be refused by
   * gRPC before the service sees it, naming no field. Sized as in _blockRows, with the tensors'
   * data left out and then added (their length prefixes at their longest); serialized whole only
   * when that bound is over the limit, so that a request within it is never refused.
   * @param {string} method
   * @param {any} request
   * @param {{field: string, what: string, hint: string}} [blame] the field named instead (e.g.
   *   chunk_rows), what of it makes the message (e.g. "2000 rows") and what to do
   */
  _checkSize(method, request, blame) {
    const measured = this._measure(method, request);
    if (!measured) return; // ids, names and options only: far below any limit
    const limit = this._maxMessageBytes;
    if (measured.upper <= limit) return;
    const size = this._methods[method].requestSerialize(request).length;
    if (size <= limit) return;
    const { tensors } = measured;
    const largest = tensors.reduce((a, b) => (b.bytes > a.bytes ? b : a));
    const field = blame ? blame.field : largest.field;
    const what = blame ? blame.what : `${largest.bytes} bytes`;
    const hint = blame ? blame.hint : OVERSIZE_HINTS[`${method} ${field}`] ?? '';
    const problem = `${what} make the ${method} message ${size} bytes, over maxMessageBytes ` +
      `(${limit}, the largest message this client sends; the server's own limit is ` +
      `serverInfo().limits.maxMessageBytes)${hint}`;
    throw new ShapleyError('RESOURCE_EXHAUSTED', `${field}: ${problem}`, [{ field, description: problem }]);
  }

  /**
   * Bounds of the size of a request of `method`, from the request with its tensors' data left
   * out (serialized without them) and then added: `lower` (the data's bytes added alone) and
   * `upper` (their length prefixes at their longest too); with the tensors it carries, as the
   * server names them. Null when it carries none (ids, names and options only).
   * @param {string} method
   * @param {any} request
   * @returns {{lower: number, upper: number, tensors: {field: string, bytes: number}[]} | null}
   */
  _measure(method, request) {
    const empty = Buffer.alloc(0);
    /** @type {{field: string, bytes: number}[]} */
    const tensors = [];
    let prefixes = 0;
    /**
     * @param {any} message
     * @param {string[]} keys
     * @param {string} prefix
     */
    const strip = (message, keys, prefix) => {
      const stripped = { ...message };
      for (const key of keys) {
        const tensor = message[key];
        if (!tensor || !ArrayBuffer.isView(tensor.data)) continue;
        tensors.push({ field: `${prefix}${key}`, bytes: tensor.data.byteLength });
        stripped[key] = { ...tensor, data: empty };
        prefixes += 2; // the tensor's and its data's
      }
      return stripped;
    };
    const stripped = strip(request, TENSOR_FIELDS, '');
    if (request.context && typeof request.context === 'object') {
      const found = tensors.length;
      stripped.context = strip(request.context, CONTEXT_TENSOR_FIELDS, 'context.');
      if (tensors.length > found) prefixes += 1;
    }
    if (tensors.length === 0) return null;
    const lower = this._methods[method].requestSerialize(stripped).length
      + tensors.reduce((sum, t) => sum + t.bytes, 0);
    return { lower, upper: lower + 9 * prefixes, tensors };
  }

  /**
   * Whether a request of `method` takes at most `limit` bytes: serialized whole only when its
   * bounds (_measure) leave it open.
   * @param {string} method
   * @param {any} request
   * @param {number} limit
   */
  _fitsIn(method, request, limit) {
    const measured = this._measure(method, request);
    if (!measured || measured.upper <= limit) return true;
    if (measured.lower > limit) return false;
    return this._methods[method].requestSerialize(request).length <= limit;
  }

  /**
   * The cache entry of a spec object: its encoded message, how it is sent (blockRows: rows per
   * CreateContextStream message, or null for one CreateContext) and, once created, its id.
   * @param {ContextSpec} spec
   * @returns {ContextEntry}
   */
  _entry(spec) {
    let entry = this._contexts.get(spec);
    if (!entry) {
      const message = encodeSpec(spec);
      entry = { id: null, message, blockRows: this._blockRows(message), pending: null };
      this._contexts.set(spec, entry);
    }
    return entry;
  }

  /**
   * Null when an encoded spec fits in one CreateContext message (MESSAGE_FILL of
   * maxMessageBytes), else the most rows per CreateContextStream message that fit (at least 1).
   * @param {any} message the encoded ContextSpec
   * @returns {number | null}
   */
  _blockRows(message) {
    const { rows, predictions } = message;
    const empty = Buffer.alloc(0);
    // Sized with the settings and the full shapes: the first block carries the same settings
    // and shapes no longer, so every block's overhead is at most this.
    const overhead = DATA_FRAMING_BYTES + this._serializeCreateRequest({
      context: { ...message, rows: { ...rows, data: empty }, predictions: { ...predictions, data: empty } },
    }).length;
    const budget = Math.floor(MESSAGE_FILL * this._maxMessageBytes);
    if (overhead + rows.data.length + predictions.data.length <= budget) return null;
    // Per row of rows: predictions of another length are refused before sending (_createStream).
    const rowBytes = (rows.data.length + predictions.data.length) / rows.shape[0];
    return Math.max(1, Math.floor((budget - overhead) / rowBytes));
  }

  /**
   * CreateContext for a spec, or CreateContextStream when it does not fit in one message;
   * concurrent callers share one call.
   * @param {ContextSpec} spec
   * @param {{timeout?: number}} [options]
   * @returns {Promise<any>} the CreateContextResponse
   */
  _create(spec, options) {
    const entry = this._entry(spec);
    if (!entry.pending) {
      const call = entry.blockRows === null
        ? this._unary('CreateContext', { context: entry.message }, options)
        : this._createStream(entry.message, entry.blockRows, options);
      entry.pending = call
        .then((response) => {
          entry.id = response.context.contextId;
          return response;
        })
        .finally(() => {
          entry.pending = null;
        });
    }
    return entry.pending;
  }

  /**
   * Send an encoded spec over CreateContextStream, `blockRows` rows per message.
   * @param {any} message the encoded ContextSpec
   * @param {number} blockRows
   * @param {{timeout?: number}} [options]
   * @returns {Promise<any>} the CreateContextResponse
   */
  async _createStream(message, blockRows, options) {
    const { rows, predictions, ...settings } = message;
    const n = rows.shape[0];
    if (predictions.shape[0] !== n) {
      // Each block pairs rows with their own predictions: counts that differ cannot be split.
      // Worded as the server words it for CreateContext.
      const got = predictions.shape.length === 1 ? `${predictions.shape[0]},` : predictions.shape.join(', ');
      throw localError('context.predictions', `must have shape (${n},) or (${n}, K); got (${got})`);
    }
    /**
     * @param {any} tensor
     * @param {number} start
     * @param {number} stop
     */
    const block = (tensor, start, stop) => {
      const rowBytes = tensor.data.length / n;
      return {
        dtype: tensor.dtype,
        shape: [stop - start, ...tensor.shape.slice(1)],
        data: tensor.data.subarray(start * rowBytes, stop * rowBytes),
      };
    };
    /**
     * The message of the block of rows [start, stop), checked against maxMessageBytes: blocks
     * of blockRows rows fit (see _blockRows) unless one row alone is too large, refused before
     * it is sent (field context.rows) as gRPC would refuse it naming no field.
     * @param {number} start
     * @param {number} stop
     */
    const blockMessage = (start, stop) => {
      /** @type {any} */
      const part = { rows: block(rows, start, stop), predictions: block(predictions, start, stop) };
      // The server refuses background, names, seed, groups and categorical columns after the
      // first message; there, the row count lets it refuse a stream that ends short of it
      // (cancelled, or cut off) rather than fit the rows received.
      if (start === 0) Object.assign(part, settings, { totalRows: n });
      const request = { context: part };
      this._checkSize('CreateContextStream', request, stop - start === 1 ? {
        field: 'context.rows',
        what: `one row's ${part.rows.data.length} bytes (and its predictions' ` +
          `${part.predictions.data.length})`,
        hint: ': a context is streamed a block of rows per message, and this row alone is too ' +
          'large for one (a server with a larger --max-message-bytes, and maxMessageBytes set to ' +
          'it, takes it)',
      } : undefined);
      return request;
    };
    // The first block is the largest (as many rows as any, and the settings): checked before
    // the call opens, so that nothing is sent.
    blockMessage(0, Math.min(n, blockRows));
    const { metadata, callOptions } = await this._prepared(options);
    return new Promise((resolve, reject) => {
      let answered = false;
      const call = this._stub.CreateContextStream(metadata, callOptions,
        (/** @type {any} */ error, /** @type {any} */ response) => {
          answered = true;
          if (error) reject(errorFromStatus(error));
          else resolve(response);
        });
      (async () => {
        for (let start = 0; start < n; start += blockRows) {
          if (answered) return; // the server refused the context early: stop sending
          const request = blockMessage(start, Math.min(n, start + blockRows));
          if (!call.write(request)) await drained(call);
        }
        if (!answered) call.end();
      })().catch((error) => {
        if (!answered) {
          answered = true;
          call.cancel();
          reject(error);
        }
      });
    });
  }

  /**
   * Resolve a context argument to an id, creating the context of a spec not yet created;
   * `recreatable` when the client holds what re-creates it (a spec, or a context calibrate()
   * returned).
   * @param {any} contextOrId
   * @param {{timeout?: number}} [options]
   * @returns {Promise<{id: string, recreatable: boolean}>}
   */
  async _contextId(contextOrId, options) {
    if (typeof contextOrId === 'string') return { id: contextOrId, recreatable: false };
    if (isSpec(contextOrId)) {
      const entry = this._entry(contextOrId);
      const id = entry.id ?? (await this._create(contextOrId, options)).context.contextId;
      return { id, recreatable: true };
    }
    if (contextOrId && typeof contextOrId.contextId === 'string') {
      return { id: contextOrId.contextId, recreatable: calibrations.has(contextOrId) };
    }
    throw localError('context_id', 'pass a context id, a context spec {rows, predictions, ...} ' +
      'or an object with contextId');
  }

  /**
   * Run `call(id)`; when the context was given as a spec or a calibrated context and the server
   * answers NOT_FOUND (it was deleted or evicted, or this replica never held it), re-create it
   * and retry once.
   * @template T
   * @param {any} contextOrId
   * @param {{timeout?: number}} options
   * @param {(id: string) => Promise<T>} call
   * @returns {Promise<T>}
   */
  async _withContext(contextOrId, options, call) {
    const { id, recreatable } = await this._contextId(contextOrId, options);
    try {
      return await call(id);
    } catch (error) {
      if (!recreatable || !(error instanceof ShapleyError) || error.code !== 'NOT_FOUND'
        || mismatches.has(error)) throw error;
      return call(await this._recreate(contextOrId, options));
    }
  }

  /**
   * Create a recreatable context again and resolve to its id: a spec with CreateContext (or
   * CreateContextStream); a calibrated context with _recalibrate. Concurrent callers share one
   * call.
   * @param {any} context a spec or an object calibrate() returned
   * @param {{timeout?: number}} options
   * @returns {Promise<string>}
   */
  _recreate(context, options) {
    if (isSpec(context)) return this._create(context, options).then((r) => r.context.contextId);
    let pending = this._recalibrating.get(context);
    if (!pending) {
      pending = this._recalibrate(context, options)
        .finally(() => this._recalibrating.delete(context));
      this._recalibrating.set(context, pending);
    }
    return pending;
  }

  /**
   * Create a calibrated context again, as itself or not at all: the Calibrate request it came
   * from, sent against the context it was calibrated from, which is re-created first when the
   * server lost it too (a spec, or a calibrated context: every calibration that led to it is
   * replayed, in order). The model is not called again: the request carries its outputs. Each
   * step must give the id the client recorded for it (the context it was calibrated from, then
   * its own: a content address); one that gives another is refused with NOT_FOUND on
   * context_id (recreationError), and the context object keeps its id. Otherwise the object
   * takes the answer's info.
   * @param {any} context an object calibrate() returned
   * @param {{timeout?: number}} options
   * @returns {Promise<string>}
   */
  async _recalibrate(context, options) {
    const { base, request, baseId, id, step } = /** @type {Calibration} */ (calibrations.get(context));
    /** @param {string} onId the id the context it was calibrated from has here */
    const calibrate = (onId) => {
      if (onId !== baseId) {
        // Only a spec makes its context anew here; a calibrated base is checked by its own
        // re-creation, an id is itself.
        const label = step > 1 ? null : isSpec(base) ? 'its spec' : 'the context it was calibrated from';
        throw recreationError(id, step, { label, step: step - 1, got: onId, expected: baseId });
      }
      return this._unary('Calibrate', { ...request, contextId: onId }, options);
    };
    let response;
    try {
      response = await this._withContext(base, options, calibrate);
    } catch (error) {
      // A step further back (re-creating the context it was calibrated from) gave another
      // context: refused as this one's.
      const mismatch = error instanceof ShapleyError ? mismatches.get(error) : undefined;
      if (mismatch) throw recreationError(id, step, mismatch);
      throw error;
    }
    const got = response.context.contextId;
    if (got !== id) throw recreationError(id, step, { label: null, step, got, expected: id });
    Object.assign(context, response.context);
    return /** @type {string} */ (got);
  }

  /** @param {CallOptions | undefined} options */
  static _outputDtype(options) {
    const dtype = options && options.outputDtype;
    if (dtype == null || dtype === 'float64') return 'DTYPE_FLOAT64';
    if (dtype === 'float32') return 'DTYPE_FLOAT32';
    throw localError('output_dtype', `must be 'float64' or 'float32'; got ${JSON.stringify(dtype)}`);
  }

  // --- the API -----------------------------------------------------------------------------

  /**
   * Fit a context (or find it already held: same data, same id) and return its info, with
   * `created` false when the server already held it. The spec object is remembered, so passing
   * the same object to explain() later costs no refit; treat it as immutable afterwards.
   * @param {ContextSpec} spec
   * @param {{timeout?: number}} [options]
   */
  async createContext(spec, options) {
    const response = await this._create(spec, options);
    return { ...response.context, created: response.created };
  }

  /**
   * Explain rows against a context: an id, an object with contextId, or a spec (created on first
   * use, re-created once if the server no longer holds it).
   * @param {string | ContextSpec | {contextId: string}} contextOrId
   * @param {ArrayInput} rows (m, d)
   * @param {ArrayInput | null} [predictions] (m,) or (m, K): the model's outputs on rows; makes
   *   every row exactly efficient
   * @param {CallOptions} [options]
   * @returns {Promise<Explanation>}
   */
  async explain(contextOrId, rows, predictions, options) {
    const x = toArray(rows, 'rows', [2]);
    const refining = ShapleyClient._refinement(options);
    if (refining) return this._refined(contextOrId, x, predictions, refining, options || {});
    /** @type {any} */
    const request = {
      rows: encodeTensor(x.data, x.shape),
      outputDtype: ShapleyClient._outputDtype(options),
    };
    if (predictions != null) {
      const p = toArray(predictions, 'predictions', [1, 2]);
      request.predictions = encodeTensor(p.data, p.shape);
    }
    return this._withContext(contextOrId, options || {}, async (id) => {
      const response = await this._unary('Explain', { ...request, contextId: id }, options);
      return assemble([response], x.shape[0]);
    });
  }

  /**
   * The refinement options (model and budget, given together), or null for a zero-shot call.
   * poolRows: true lets each row also learn from the other rows of its Refine call (see
   * RefineRequest.pool_rows): more accurate on smooth models in many columns, but a row's
   * answer then depends on the rows refined with it.
   * @param {CallOptions | undefined} options
   * @returns {{model: Model, budget: number, randomState: string | null,
   *   poolRows: boolean} | null}
   */
  static _refinement(options) {
    const { model, budget, randomState, poolRows } = options || {};
    if (poolRows != null && typeof poolRows !== 'boolean') {
      throw localError('pool_rows', `must be true or false; got ${shown(poolRows)}`);
    }
    if (model == null && budget == null) {
      if (randomState != null) {
        throw localError('random_state', 'seeds a refinement: it needs model and budget');
      }
      if (poolRows) throw localError('pool_rows', 'pools a refinement: it needs model and budget');
      return null;
    }
    if (model == null) throw localError('model', 'is required with budget');
    if (budget == null) throw localError('budget', 'is required with model');
    if (typeof model !== 'function') throw localError('model', 'must be a function of the rows');
    if (!Number.isSafeInteger(budget) || budget < 1) {
      throw localError('budget', `must be a positive integer; got ${shown(budget)}`);
    }
    const seed = randomState == null ? null : uint64Text(randomState, 'random_state');
    return { model, budget, randomState: seed, poolRows: poolRows === true };
  }

  /**
   * Refined attributions: per chunk of rows, Propose, the model on the proposed rows, Refine;
   * answers reassembled in order. A chunk is at most the server's limits.maxExplainRows rows,
   * and its messages fit within the smaller of maxMessageBytes and the server's limit. The
   * whole call's predictions are checked before the first chunk goes.
   * @param {any} contextOrId
   * @param {{data: FloatArray, shape: number[]}} x
   * @param {ArrayInput | null | undefined} predictions
   * @param {{model: Model, budget: number, randomState: string | null,
   *   poolRows: boolean}} refining
   * @param {CallOptions} options
   * @returns {Promise<Explanation>}
   */
  async _refined(contextOrId, x, predictions, refining, options) {
    const [m, d] = x.shape;
    const p = this._checkedPredictions(contextOrId, predictions, m);
    const outputDtype = ShapleyClient._outputDtype(options);
    return this._withContext(contextOrId, options, async (id) => {
      const [info, { messageBytes, maxRows }] = await Promise.all([
        this.getContext(id, options), this._chunkLimits(options)]);
      const k = Math.max(1, Number(info.nOutputs));
      const players = (info.attributionNames || []).length || d;
      // The proposal (m * R, d), the outputs sent back (m * R, K) and the answer each fit in a
      // message, R <= budget: the Python client's rule. Propose and Refine take at most
      // maxExplainRows explained rows each, like Explain; the model rows they carry are bounded
      // by the message size alone.
      const perRow = Math.max(refining.budget * d * 8, refining.budget * k * 8 + (d + k) * 8,
        (2 * players + 1) * k * 8);
      const chunkRows = Math.max(1,
        Math.min(Math.floor((MESSAGE_FILL * messageBytes) / perRow), maxRows));
      /** @type {any[]} */
      const responses = [];
      for (let start = 0; start < m; start += chunkRows) {
        const stop = Math.min(m, start + chunkRows);
        /** @type {any} */
        const request = {
          contextId: id,
          rows: encodeTensor(x.data.subarray(start * d, stop * d), [stop - start, d]),
          budget: refining.budget,
        };
        if (p) {
          const pk = p.shape.length === 2 ? p.shape[1] : 1;
          request.predictions = encodeTensor(p.data.subarray(start * pk, stop * pk),
            [stop - start, ...p.shape.slice(1)]);
        }
        if (refining.randomState != null) request.randomState = refining.randomState;
        const proposal = await this._unary('Propose', request, options);
        const proposed = /** @type {{data: Float64Array, shape: number[]}} */ (
          decodeTensor(proposal.rows, 'rows'));
        const scored = toArray(
          await refining.model(nest(proposed.data, proposed.shape), proposed),
          'outputs', [1, 2],
        );
        // The server rebuilds the proposal; with its sha256 it refuses outputs scored on rows
        // it would not propose (a replica of another version drew other coalitions).
        const response = await this._unary('Refine', {
          ...request,
          outputs: encodeTensor(scored.data, scored.shape),
          outputDtype,
          proposalSha256: proposal.proposalSha256,
          poolRows: refining.poolRows,
        }, options);
        responses.push({ ...response, firstRow: start });
      }
      return assemble(responses, m);
    });
  }

  /**
   * Explain a batch of any size over ExplainStream: sent in chunks of `chunkRows` rows, answers
   * reassembled in order into one Explanation. Same context rules as explain(). The default chunk
   * is DEFAULT_CHUNK_ROWS rows, fewer when the server explains fewer per request
   * (limits.maxExplainRows) or when their answer would not fit in a message (the smaller of
   * maxMessageBytes and the server's limit). The whole call's predictions are checked before the
   * first chunk goes.
   * @param {string | ContextSpec | {contextId: string}} contextOrId
   * @param {ArrayInput} rows
   * @param {ArrayInput | null} [predictions]
   * @param {StreamOptions} [options]
   * @returns {Promise<Explanation>}
   */
  async explainStream(contextOrId, rows, predictions, options) {
    options ??= {}; // null as absent, as explain and createContext take it
    const wireNames = { randomState: 'random_state', poolRows: 'pool_rows' };
    for (const option of ['model', 'budget', 'randomState', 'poolRows']) {
      // Taken by explain to refine: here they were ignored, and the answer was zero-shot.
      if (/** @type {any} */ (options)[option] != null) {
        throw localError(/** @type {any} */ (wireNames)[option] ?? option,
          'refines, which explainStream does not: call explain with model and budget (it ' +
          'refines in chunks)');
      }
    }
    const x = toArray(rows, 'rows', [2]);
    const [m, d] = x.shape;
    const p = this._checkedPredictions(contextOrId, predictions, m);
    const { chunkRows } = options;
    if (chunkRows != null && (!Number.isSafeInteger(chunkRows) || chunkRows < 1)) {
      throw localError('chunk_rows', `must be a positive integer; got ${shown(chunkRows)}`);
    }
    const outputDtype = ShapleyClient._outputDtype(options);
    /**
     * @param {number} start
     * @param {number} stop
     */
    const chunk = (start, stop) => {
      /** @type {any} */
      const message = {
        rows: encodeTensor(x.data.subarray(start * d, stop * d), [stop - start, d]),
        outputDtype,
      };
      if (p) {
        const k = p.shape.length === 2 ? p.shape[1] : 1;
        message.predictions = encodeTensor(
          p.data.subarray(start * k, stop * k),
          [stop - start, ...p.shape.slice(1)],
        );
      }
      return message;
    };
    return this._withContext(contextOrId, options, async (id) => {
      const rowsPerChunk = chunkRows ?? await this._streamChunkRows(id, d, options);
      // The first message is the largest: as many rows as any, and the context id. The default
      // chunks fit; a chunkRows given may not. A message of one row is too large whatever the
      // chunk: refused naming the rows (or predictions), as without chunkRows.
      const sent = Math.min(m, rowsPerChunk);
      this._checkSize('ExplainStream', { ...chunk(0, sent), contextId: id },
        chunkRows != null && sent > 1 ? {
          field: 'chunk_rows',
          what: `${sent} rows`,
          hint: ': a smaller chunkRows, or none (chunks sized to fit)',
        } : undefined);
      return this._stream(id, m, rowsPerChunk, chunk, options);
    });
  }

  /**
   * The default chunk of explainStream: DEFAULT_CHUNK_ROWS rows, at most the server's
   * maxExplainRows, and no more than whose answer fits in a message.
   * @param {string} id the context's id
   * @param {number} d the rows' features
   * @param {{timeout?: number}} options
   * @returns {Promise<number>}
   */
  async _streamChunkRows(id, d, options) {
    const [info, { messageBytes, maxRows }] = await Promise.all([
      this.getContext(id, options), this._chunkLimits(options)]);
    // The context's outputs, not the predictions': a K-output context explained without
    // predictions still answers (m, d, K). The answer (values and uncertainty, (m, d, K), plus
    // base values) is the larger message; a tenth of the limit is kept for framing and the
    // context's diagnostics (MESSAGE_FILL).
    const k = Math.max(1, Number(info.nOutputs));
    const perRow = (2 * d + 1) * k * 8 + d * 8;
    return Math.max(1, Math.min(DEFAULT_CHUNK_ROWS,
      Math.floor((MESSAGE_FILL * messageBytes) / perRow), maxRows));
  }

  /**
   * What bounds a chunk of explained rows: the largest message both this client
   * (maxMessageBytes) and the server take, and the most rows the server explains per request
   * (limits.maxExplainRows). A limit the server leaves at 0 (one older than the field) is one it
   * does not state.
   * @param {{timeout?: number}} options
   * @returns {Promise<{messageBytes: number, maxRows: number}>}
   */
  async _chunkLimits(options) {
    const { limits } = await this.serverInfo(options);
    return {
      messageBytes: Math.min(this._maxMessageBytes, Number(limits && limits.maxMessageBytes) || Infinity),
      maxRows: Number(limits && limits.maxExplainRows) || Infinity,
    };
  }

  /**
   * The predictions of a call sent in chunks, refused before sending unless there is one per row
   * (a chunk pairs rows with their own predictions: extra ones would go unseen, and fewer be
   * refused for one chunk), in the words the server uses for the same call in one message.
   * @param {any} contextOrId
   * @param {ArrayInput | null | undefined} predictions
   * @param {number} m the rows
   * @returns {{data: FloatArray, shape: number[]} | null}
   */
  _checkedPredictions(contextOrId, predictions, m) {
    if (predictions == null) return null;
    const p = toArray(predictions, 'predictions', [1, 2]);
    // The server's checks, in its order: the tensor's axes, then its rows against the query's.
    if (p.shape.includes(0)) {
      throw localError('predictions', `every axis must have length >= 1; got shape [${p.shape.join(', ')}]`);
    }
    if (p.shape[0] !== m) {
      const got = p.shape.length === 1 ? `${p.shape[0]},` : p.shape.join(', ');
      const id = this._knownId(contextOrId);
      throw localError('predictions',
        `must have shape (${m},) or (${m}, K); got (${got})${id ? ` (context ${id})` : ''}`);
    }
    return p;
  }

  /**
   * The id of a context argument when the client knows it without a call (a spec not yet
   * created has none), else null.
   * @param {any} contextOrId
   * @returns {string | null}
   */
  _knownId(contextOrId) {
    if (typeof contextOrId === 'string') return contextOrId;
    if (isSpec(contextOrId)) {
      const entry = this._contexts.get(contextOrId);
      return entry ? entry.id : null;
    }
    if (contextOrId && typeof contextOrId.contextId === 'string') return contextOrId.contextId;
    return null;
  }

  /**
   * @param {string} id
   * @param {number} m
   * @param {number} chunkRows
   * @param {(start: number, stop: number) => any} chunk
   * @param {{timeout?: number}} options
   * @returns {Promise<Explanation>}
   */
  async _stream(id, m, chunkRows, chunk, options) {
    const { metadata, callOptions } = await this._prepared(options);
    const call = this._stub.ExplainStream(metadata, callOptions);
    return new Promise((resolve, reject) => {
      /** @type {any[]} */
      const responses = [];
      let ended = false;
      /** @type {any} */ let status = null;
      let settled = false;
      const finish = () => {
        if (settled || !status) return;
        if (status.code !== grpc.status.OK) {
          settled = true;
          reject(errorFromStatus(status));
        } else if (ended) {
          settled = true;
          try {
            resolve(assemble(responses, m));
          } catch (error) {
            reject(error);
          }
        }
      };
      call.on('data', (/** @type {any} */ response) => responses.push(response));
      call.on('error', () => {}); // reported through 'status', which carries the same metadata
      call.on('status', (/** @type {grpc.StatusObject} */ s) => {
        status = s;
        finish();
      });
      call.on('end', () => {
        ended = true;
        finish();
      });
      (async () => {
        for (let start = 0; start < m; start += chunkRows) {
          if (status) return; // the call is over (an error): stop sending
          const message = chunk(start, Math.min(m, start + chunkRows));
          if (start === 0) message.contextId = id;
          if (!call.write(message)) await drained(call);
        }
        if (!status) call.end();
      })().catch((error) => {
        if (!settled) {
          settled = true;
          call.cancel();
          reject(error);
        }
      });
    });
  }

  // --- calibration ---------------------------------------------------------------------------

  /**
   * The ProposeCalibration fields that calibrate() sends again with Calibrate: budget (0, the
   * server's default, when not given) and the seed when given.
   * @param {CalibrationOptions | undefined} options
   * @returns {{budget: number, randomState?: string}}
   */
  static _calibration(options) {
    const { budget, randomState } = options || {};
    if (budget != null && (!Number.isSafeInteger(budget) || budget < 0)) {
      throw localError('budget', 'must be a non-negative integer (0 or absent: the server\'s ' +
        `default, 10 rows per background row); got ${shown(budget)}`);
    }
    /** @type {{budget: number, randomState?: string}} */
    const fields = { budget: budget ?? 0 };
    if (randomState != null) fields.randomState = uint64Text(randomState, 'random_state');
    return fields;
  }

  /**
   * The `refit` option checked: true, false or absent. proposeCalibration took anything but
   * true as false ('true' from a config file sized the weights' budget), where calibrate
   * refused it.
   * @param {{refit?: any}} options
   * @returns {boolean | null | undefined}
   */
  static _refit(options) {
    const { refit } = options;
    if (refit != null && typeof refit !== 'boolean') {
      throw localError('refit', `must be true, false or absent (automatic); got ${shown(refit)}`);
    }
    return refit;
  }

  /**
   * The rows your model should score, once, to calibrate a context (calibrate() does the whole
   * round trip). The same arguments always give the same rows. Same context rules as explain().
   * @param {string | ContextSpec | {contextId: string}} contextOrId
   * @param {CalibrationOptions} [options] budget: the most rows in all (default: 10 per
   *   background row, 20 with `refit: true`); randomState: seeds the rows (default: the
   *   context's); refit: true sizes the default budget for a calibration that sends the
   *   context's spec along (a refit of the surrogates keeps gaining from more rows, the weights
   *   alone do not)
   * @returns {Promise<CalibrationProposal>}
   */
  async proposeCalibration(contextOrId, options) {
    options ??= {}; // null as absent, as explain and createContext take it
    const fields = ShapleyClient._calibration(options);
    const refit = ShapleyClient._refit(options) === true;
    const response = await this._withContext(contextOrId, options,
      (id) => this._unary('ProposeCalibration', { ...fields, refit, contextId: id }, options));
    const rows = /** @type {{data: Float64Array, shape: number[]}} */ (
      decodeTensor(response.rows, 'rows'));
    return {
      rows: rows.data,
      shape: rows.shape,
      budget: Number(response.budget),
      contextId: response.contextId,
      artifactVersion: response.artifactVersion,
      proposalSha256: response.proposalSha256,
    };
  }

  /**
   * The rows calibrate() has the model score and, when the context's spec goes along (a
   * refit), the most bytes that Calibrate request may take (`refitBytes`; 0: the weights
   * only), with the message limit that bound comes from (`messageBytes`: the smaller of
   * maxMessageBytes and the server's limits.maxMessageBytes). Decided before the model runs,
   * so that the default budget is the one for what runs (20 rows per background row for a
   * refit, 10 for the weights alone) and the model scores no rows only a refit needed: the
   * Python client's decision, so that the same call gives the same context from both.
   *
   * A refit needs the spec and the outputs (float64, shaped like the predictions) in one
   * message (MESSAGE_FILL of that limit) and the spec's rows and the budget within the
   * server's limits.maxContextRows (as the server counts them). Past either, or where the
   * server's message limit cannot carry the refit's default proposal, the weights' default
   * budget (a refit on it when that fits; without `refit: true`, only the weights otherwise).
   * With `refit: true`, a refit that does not fit is refused here, before the model runs: past
   * the message naming refit, past maxContextRows as the server refuses it (RESOURCE_EXHAUSTED,
   * field budget).
   * @param {any} contextOrId
   * @param {CalibrationOptions} options
   * @param {boolean | null | undefined} refit
   * @returns {Promise<{proposal: CalibrationProposal, refitBytes: number, messageBytes: number}>}
   */
  async _calibrationProposal(contextOrId, options, refit) {
    /** @param {boolean} forRefit @param {number | null | undefined} budget */
    const propose = (forRefit, budget) =>
      this.proposeCalibration(contextOrId, { ...options, budget, refit: forRefit });
    if (refit === false || !isSpec(contextOrId)) {
      return { proposal: await propose(false, options.budget), refitBytes: 0, messageBytes: 0 };
    }
    const { message } = this._entry(/** @type {ContextSpec} */ (contextOrId));
    const { limits } = await this.serverInfo(options);
    const messageBytes = Math.min(this._maxMessageBytes,
      Number(limits && limits.maxMessageBytes) || Infinity);
    const bound = Math.floor(MESSAGE_FILL * messageBytes);
    const maxRows = Number(limits && limits.maxContextRows) || Infinity;
    const n = Number(message.rows.shape[0]);
    const seed = ShapleyClient._calibration(options).randomState;
    /**
     * Whether a refit on `proposal` (null: on no rows) fits in the message, and in the server's
     * largest context.
     * @param {CalibrationProposal | null} proposal
     * @returns {[boolean, boolean]}
     */
    const fits = (proposal) => {
      const shape = [proposal ? proposal.shape[0] : 0, ...message.predictions.shape.slice(1)];
      const count = shape.reduce((a, b) => a * b, 1);
      /** @type {any} */
      const request = {
        // The id is known once the context is created; its length is all that matters here.
        contextId: proposal ? proposal.contextId : `ctx-${'0'.repeat(40)}`,
        outputs: { dtype: 'DTYPE_FLOAT64', shape, data: Buffer.alloc(8 * count) },
        context: message,
        proposalSha256: '0'.repeat(64), // as long as the proposal's, sent with the outputs
      };
      if (proposal) request.budget = proposal.budget;
      if (seed != null) request.randomState = seed;
      return [this._fitsIn('Calibrate', request, bound), n + (proposal ? proposal.budget : 0) <= maxRows];
    };
    if (!fits(null)[0]) { // the spec alone fills a message (it is streamed)
      if (refit === true) throw refitTooLarge(messageBytes);
      return { proposal: await propose(false, options.budget), refitBytes: 0, messageBytes };
    }
    // Absent or 0: the server's default budget, which differs for a refit and the weights.
    const byDefault = !options.budget;
    /** @type {CalibrationProposal | null} */
    let proposal = null;
    try {
      proposal = await propose(true, options.budget);
    } catch (error) {
      // The refit's default proposal over the server's message limit: the weights' default.
      if (!byDefault || !(error instanceof ShapleyError) || error.code !== 'RESOURCE_EXHAUSTED'
        || error.field !== 'budget') throw error;
    }
    let [inMessage, inRows] = proposal ? fits(proposal) : [false, false];
    if (!(inMessage && inRows) && byDefault) {
      proposal = await propose(false, options.budget);
      [inMessage, inRows] = fits(proposal);
    }
    const proposed = /** @type {CalibrationProposal} */ (proposal);
    if (inMessage && inRows) return { proposal: proposed, refitBytes: bound, messageBytes };
    if (refit !== true) return { proposal: proposed, refitBytes: 0, messageBytes };
    if (!inMessage) throw refitTooLarge(messageBytes);
    // Past the server's largest context: refused as the server would refuse it, before the
    // model runs.
    let advice = '';
    if (byDefault) advice = ' (the weights\' default budget; the refit\'s is larger)';
    else if (maxRows > n) advice = `, or a budget of at most ${maxRows - n}`;
    const problem = `a refit fits the context's ${n} rows and the ${proposed.budget} scored ` +
      `rows, ${n + proposed.budget} in all; the limit is ${maxRows} (the server's ` +
      `limits.maxContextRows): pass refit: false to refit the weights only${advice}`;
    throw new ShapleyError('RESOURCE_EXHAUSTED', `budget: ${problem}`,
      [{ field: 'budget', description: problem }]);
  }

  /**
   * The context calibrated on your model: a new context (the one given is left as it was) whose
   * surrogates are refitted, once, to the model's outputs on rows the server proposes
   * (ProposeCalibration, `model` called once on them, Calibrate). `refit`: true sends the
   * context's spec along and the server refits the surrogates on its rows and the scored rows
   * (the more accurate; two fits' time); false refits their weights only; absent, true when the
   * context is given as a spec, it fits in one message with the outputs (the smaller of
   * maxMessageBytes and the server's limits.maxMessageBytes), and its rows and the budget
   * together are within the server's limits.maxContextRows, else false (an id or a calibrated
   * context carries no data: refit true is then refused before sending). Decided before `model`
   * runs, so that it scores the default budget of what runs: where the refit's default (20 rows
   * per background row) does not fit (the message, maxContextRows, or the server's limit on the
   * proposal), the weights' default (10 per background row), refitted on when that fits
   * (see _calibrationProposal); `refit: true` where a refit does not fit is refused before
   * `model` runs: past the message naming refit, past maxContextRows naming budget
   * (RESOURCE_EXHAUSTED, as the server refuses it).
   * `calibrationRefitted` on the answer says whether the surrogates were refitted (by this
   * calibration or, for a calibrated context calibrated again, the one it follows). Resolves to
   * its info, with
   * `created` (false when the server already held it: the same outputs give the same id); pass
   * that object anywhere a context goes (explain, explainStream, refinement, getContext,
   * proposeCalibration, calibrate). When the server
   * no longer holds it, the client re-creates it from the outputs it keeps, without calling
   * `model` again: Calibrate against the context it came from, itself re-created first when
   * that is a spec (or a calibrated context) the server lost too, each step checked to give the
   * id it gave here (see _recalibrate).
   * @param {string | ContextSpec | {contextId: string}} contextOrId
   * @param {Model} model called once with the proposed rows, nested and flat; returns the
   *   outputs, (rows,) or (rows, K) like the context's predictions; may be async
   * @param {CalibrationOptions} [options]
   * @returns {Promise<any>}
   */
  async calibrate(contextOrId, model, options) {
    options ??= {}; // null as absent, as explain and createContext take it
    if (typeof model !== 'function') {
      throw localError('model', 'must be a function of the rows (your model)');
    }
    const fields = ShapleyClient._calibration(options);
    const refit = ShapleyClient._refit(options);
    // Only a spec carries the context's data (its rows and predictions): a calibrated context's
    // id is not a spec's content address, and an id alone carries nothing.
    if (refit === true && !isSpec(contextOrId)) {
      throw localError('refit', 'refitting the surrogates needs the context\'s data: pass the ' +
        'context as its spec {rows, predictions, ...} (not an id or a calibrated context), or ' +
        'refit: false (weights only)');
    }
    const { proposal, refitBytes, messageBytes } =
      await this._calibrationProposal(contextOrId, options, refit);
    const flat = { data: proposal.rows, shape: proposal.shape };
    const outputs = toArray(await model(nest(flat.data, flat.shape), flat), 'outputs', [1, 2]);
    const tensor = encodeTensor(outputs.data, outputs.shape);
    // A copy: the model's own array may change after this call; re-creation sends these bytes.
    /** @type {any} */
    // The proposal's sha256 goes along, in re-creations too: a server that would propose
    // other rows (another version) refuses the outputs instead of calibrating on them.
    const request = {
      ...fields,
      budget: proposal.budget,
      outputs: { ...tensor, data: Buffer.from(tensor.data) },
      proposalSha256: proposal.proposalSha256,
    };
    if (refitBytes) {
      // The outputs were sized before the model ran, as float64 shaped like the predictions:
      // more than that is a shape the server refuses (naming outputs), spec or not.
      const { message } = this._entry(/** @type {ContextSpec} */ (contextOrId));
      if (this._fitsIn('Calibrate', { ...request, contextId: proposal.contextId, context: message },
        refitBytes)) {
        request.context = message;
      } else if (refit === true) {
        throw refitTooLarge(messageBytes);
      }
    }
    let baseId = '';
    const response = await this._withContext(contextOrId, options, (id) => {
      baseId = id;
      return this._unary('Calibrate', { ...request, contextId: id }, options);
    });
    const calibrated = { ...response.context, created: response.created };
    // An id or a plain object with contextId (an info, an Explanation): only its id is kept.
    const base = typeof contextOrId === 'object'
      && (isSpec(contextOrId) || calibrations.has(contextOrId)) ? contextOrId : idOf(contextOrId);
    const from = typeof base === 'object' ? calibrations.get(base) : undefined;
    calibrations.set(calibrated, {
      base, request, baseId, id: response.context.contextId, step: from ? from.step + 1 : 1,
    });
    return calibrated;
  }

  /**
   * The info and diagnostics of a context. Same context rules as explain(): a spec is created
   * on first use, and a spec or a calibrated context is re-created (once) when the server
   * answers NOT_FOUND; an id, or another object with contextId, is looked up as it is.
   * @param {string | ContextSpec | {contextId: string}} contextOrId
   * @param {{timeout?: number}} [options]
   */
  async getContext(contextOrId, options) {
    options ??= {}; // null as absent, as explain and createContext take it
    return this._withContext(contextOrId, options,
      (id) => this._unary('GetContext', { contextId: id }, options));
  }

  /**
   * Delete a context; resolves to {contextId, freedBytes}.
   * @param {string | {contextId: string}} contextId
   * @param {{timeout?: number}} [options]
   */
  async deleteContext(contextId, options) {
    return this._unary('DeleteContext', { contextId: idOf(contextId) }, options);
  }

  /**
   * Every context the server holds: {contexts, totalBytes}. In one call, most recently used
   * first, when their descriptions fit in one message; else, or with `pageSize`, in calls of at
   * most `pageSize` contexts each (as many as fit in a message when omitted), in context_id
   * order, so that none is listed twice or skipped.
   * @param {{timeout?: number, pageSize?: number}} [options]
   */
  async listContexts(options) {
    options ??= {}; // null as absent, as explain and createContext take it
    let pageSize = options.pageSize;
    if (pageSize === undefined) {
      try {
        const whole = await this._unary('ListContexts', {}, options);
        return { contexts: whole.contexts, totalBytes: whole.totalBytes };
      } catch (error) {
        if (!(error instanceof ShapleyError)
          || error.code !== 'RESOURCE_EXHAUSTED' || error.field !== 'page_size') throw error;
      }
      pageSize = AS_MANY_AS_FIT;
    } else if (!Number.isSafeInteger(pageSize) || pageSize < 1) {
      throw localError('page_size', `must be an integer >= 1; got ${shown(pageSize)}`);
    }
    pageSize = Math.min(pageSize, AS_MANY_AS_FIT);
    const contexts = [];
    let pageToken = '';
    let totalBytes = 0;
    do {
      const page = await this._unary('ListContexts', { pageSize, pageToken }, options);
      contexts.push(...page.contexts);
      totalBytes = page.totalBytes;
      pageToken = page.nextPageToken;
    } while (pageToken);
    return { contexts, totalBytes };
  }

  /**
   * Server version, artifact and limits: {version, artifactVersion, artifactSha256, limits,
   * contextsHeld, contextStoreBytes}.
   * @param {{timeout?: number}} [options]
   */
  async serverInfo(options) {
    return this._unary('GetServerInfo', {}, options);
  }

  /**
   * grpc.health.v1 status of `service` ('' = the whole server, the default):
   * 'SERVING', 'NOT_SERVING' (e.g. still warming up or draining), ...
   * @param {string} [service]
   * @param {{timeout?: number}} [options]
   * @returns {Promise<string>}
   */
  async health(service = '', options) {
    const { metadata, callOptions } = await this._prepared(options);
    return new Promise((resolve, reject) => {
      this._stub.makeUnaryRequest(
        HEALTH_CHECK_METHOD,
        encodeHealthRequest,
        decodeHealthResponse,
        { service },
        metadata,
        callOptions,
        (/** @type {any} */ error, /** @type {any} */ status) => {
          if (error) reject(errorFromStatus(error));
          else resolve(status);
        },
      );
    });
  }

  /**
   * Poll health until the server reports SERVING (it binds before its warm-up ends).
   * @param {{timeout?: number, interval?: number}} [options] seconds; timeout default 120
   */
  async waitForServing(options) {
    options ??= {}; // null as absent, as explain and createContext take it
    const { timeout = 120, interval = 0.25 } = options;
    const deadline = Date.now() + timeout * 1000;
    let last = 'no answer';
    for (;;) {
      try {
        last = await this.health(SERVICE_NAME, { timeout: Math.max(0.5, interval * 4) });
        if (last === 'SERVING') return;
      } catch (error) {
        // Refused before sending (a token gRPC cannot carry): waiting does not change that.
        if (error instanceof ShapleyError && error.code === 'INVALID_ARGUMENT') throw error;
        last = error instanceof Error ? error.message : String(error);
      }
      if (Date.now() >= deadline) {
        throw new ShapleyError('DEADLINE_EXCEEDED', `server not SERVING after ${timeout} s (${last})`);
      }
      await new Promise((r) => setTimeout(r, interval * 1000));
    }
  }

  /** Close the channel; calls in flight are cancelled. */
  close() {
    this._stub.close();
  }
}

/** @param {any} contextId */
function idOf(contextId) {
  if (typeof contextId === 'string') return contextId;
  if (contextId && typeof contextId.contextId === 'string') return contextId.contextId;
  throw localError('context_id', 'must be a string or an object with contextId');
}

/**
 * The refusal of `refit: true` for a spec that does not fit in one Calibrate message with the
 * outputs.
 * @param {number} messageBytes the smaller of maxMessageBytes and the server's limit
 */
function refitTooLarge(messageBytes) {
  return localError('refit', `the context and the outputs do not fit in one ${messageBytes}-byte ` +
    'message (the smaller of maxMessageBytes and the server\'s limits.maxMessageBytes): pass ' +
    'refit: false (weights only)');
}

module.exports = {
  ShapleyClient,
  ShapleyError,
  Explanation,
  DEFAULT_PROTO_PATHS,
  DEFAULT_CHUNK_ROWS,
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_MAX_ATTEMPTS,
  retryServiceConfig,
};
