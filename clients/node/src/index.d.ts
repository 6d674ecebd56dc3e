// Type declarations of @shapley/client. The implementation, src/index.js, is JSDoc-typed; `npm test`
// type-checks it (checkJs, strict) and examples/quickstart.js against these declarations
// (tsconfig.json).
import type { Metadata } from '@grpc/grpc-js';

export type FloatArray = Float64Array | Float32Array;

/**
 * A flat row-major array and its shape, e.g. {data: Float64Array(n * d), shape: [n, d]}. A
 * number[] `data` is checked entry by entry: null, a string or a bigint is refused before
 * sending (INVALID_ARGUMENT naming the field and `data[i]`), never coerced.
 */
export interface FlatArray {
  data: FloatArray | ArrayLike<number>;
  shape: number[];
}

/**
 * rows: number[][] (m, d) or FlatArray with a 2-D shape; NaN is a missing value.
 * predictions: number[] (m,), number[][] (m, K), a Float64Array/Float32Array (m,) or FlatArray.
 * Float32Array data is sent as float32, everything else as float64.
 */
export type ArrayInput = number[] | number[][] | FloatArray | FlatArray;

/** What a context is made of: the rows the model saw and its outputs on them. */
export interface ContextSpec {
  /** (n, d) context rows, n >= 3. NaN is a value (missing); +-Infinity is refused. */
  rows: ArrayInput;
  /** (n,) or (n, K): the model's outputs on rows (probability, logit or regression value). */
  predictions: ArrayInput;
  /**
   * Distinct row indices standing in for absent features; default: min(n, 100) seeded rows.
   * Integer numbers only (an array or a typed array): anything else (true, '5', [7], 1n, 1.5)
   * is refused before sending (INVALID_ARGUMENT, field 'context.background'), never coerced;
   * indices outside [0, n) by the server.
   */
  background?: number[];
  /** d distinct names; default "x0", "x1", ... */
  featureNames?: string[];
  /**
   * Seeds every random choice. Default 0. The server accepts [0, 2^32) and refuses the rest
   * (INVALID_ARGUMENT, field 'context.random_state'). The wire field is a uint64: the client
   * refuses, before sending, what it cannot encode exactly: a number that is not a non-negative
   * safe integer, a bigint or a decimal string outside [0, 2^64).
   */
  randomState?: number | bigint | string;
  /**
   * Optional partition of the d columns: group name -> column indices (an object or a Map, or
   * [name, indices] pairs; at least one group), every column in exactly one group. Answers then hold one value per group ((m, G) or (m, G, K)), the Shapley values
   * of the game whose players are the groups, exactly efficient. Indices are integer numbers
   * only: anything else (true, '5', [7], 1n, 1.5), or a group that is not an array of them, is
   * refused before sending (INVALID_ARGUMENT, field 'context.groups'), never coerced; columns
   * outside [0, d), overlaps and uncovered columns by the server.
   */
  groups?: Record<string, ArrayLike<number>> | Map<unknown, ArrayLike<number>> | [unknown, ArrayLike<number>][];
  /**
   * Columns whose values are category codes (integers; NaN for a missing category), by index or
   * by name (resolved against featureNames, or x0, x1, ... without them). Sent sorted, so their
   * order does not change the context id. Each still gets one attribution; a code the context
   * never showed is an unseen category at explain time. Refused before sending: an unknown
   * name, a negative or non-integer index; by the server (field 'context.categorical_columns'):
   * an index beyond the columns or listed twice; and (field 'context.rows') a non-integer code.
   */
  categoricalColumns?: (number | string)[];
}

export interface TlsFiles {
  /** PEM CA bundle that signed the server's certificate (default: the system roots). */
  rootCerts?: Buffer | null;
  /** PEM client key and certificate chain, for servers started with --tls-client-ca (mTLS). */
  privateKey?: Buffer | null;
  certChain?: Buffer | null;
}

export interface ClientOptions {
  /** false (default): plaintext; true: TLS with the system roots; or the PEM files. */
  tls?: boolean | TlsFiles;
  /**
   * Bearer token sent as `authorization: Bearer <token>`; a function is called per request.
   * Printable ASCII only (what gRPC metadata carries): another character, e.g. a trailing newline
   * left by reading it from a file, is refused before sending (INVALID_ARGUMENT, field 'token').
   */
  token?: string | (() => string | Promise<string>);
  /** Deadline of every call, in seconds (default: none). Each method's options can override. */
  timeout?: number;
  /** Path of shapley.proto (default: the packed copy, else ../../protos/shapley/v1/shapley.proto). */
  proto?: string;
  /** Extra @grpc/grpc-js channel options, e.g. {'grpc.ssl_target_name_override': 'host'}. */
  channelOptions?: Record<string, unknown>;
  /**
   * The server's message limit in bytes (default 67108864 = 64 MiB, the server's default; the
   * server reports its own as serverInfo().limits.maxMessageBytes): set it to that. The largest
   * request the client sends: a larger one is refused before sending, RESOURCE_EXHAUSTED naming
   * the field that makes it too large (the server's own limit is enforced by gRPC before the
   * service reads the request, and names no field). A context whose CreateContext message would
   * exceed 90 % of it goes over CreateContextStream, in blocks of as many rows as fit in 90 % of
   * it; one whose single row (with its predictions) is over it is refused before sending
   * (RESOURCE_EXHAUSTED, field 'context.rows').
   */
  maxMessageBytes?: number;
  /**
   * Tries of a call that fails UNAVAILABLE (a replica stopping or killed, a proxy with no
   * upstream), 1 to 5 (default 5; 1: no retries), with exponential backoff from 0.1 s, by
   * gRPC's own retry policy (retryServiceConfig() as the channel's service config). Every call
   * is safe to retry: contexts are content-addressed and explanations have no side effects.
   */
  maxAttempts?: number;
}

export interface CallOptions {
  /** Deadline of this call in seconds, instead of the client's. */
  timeout?: number;
}

export interface ExplainOptions extends CallOptions {
  /** Element type of the answer: 'float64' (default, Float64Array) or 'float32' (Float32Array). */
  outputDtype?: 'float64' | 'float32';
}

/**
 * Your model, scoring the rows the server proposes: `rows` (n, d) as nested arrays (columns in
 * the context's order, NaN where a background row has a missing value) and the same numbers flat
 * in `flat`. Returns its outputs on them, (n,) or (n, K) like the context's predictions, on the
 * same scale; may be async. The server never calls your model: the client does.
 */
export type Model = (rows: number[][], flat: { data: Float64Array; shape: number[] }) =>
  ArrayInput | Promise<ArrayInput>;

export interface RefineOptions extends ExplainOptions {
  /** Refinement: called on the proposed rows of each chunk. Give it together with budget. */
  model?: Model;
  /**
   * The most rows `model` scores per explained row (at least 4 with predictions, 5 without;
   * at most the server's limits.maxBudget).
   */
  budget?: number;
  /** Seeds the proposed rows (default: the context's randomState); needs model and budget. */
  randomState?: number | bigint | string;
  /**
   * true: each row also learns from the other rows of its chunk (one Refine call; see
   * RefineRequest.pool_rows): more accurate on smooth models in many columns, but a row's
   * answer then depends on the rows refined with it. Needs model and budget.
   */
  poolRows?: boolean;
}

export interface StreamOptions extends ExplainOptions {
  /**
   * Rows per ExplainStream message, sent as given: a positive integer (else INVALID_ARGUMENT,
   * field 'chunk_rows'), refused before sending when its messages would exceed
   * ClientOptions.maxMessageBytes (RESOURCE_EXHAUSTED, field 'chunk_rows', naming the rows the
   * message holds: chunkRows or all of them, when fewer; a message of one row too large is
   * refused naming 'rows' or 'predictions', as without chunkRows). Default:
   * DEFAULT_CHUNK_ROWS (1000), fewer when the server explains fewer per request
   * (limits.maxExplainRows) or when their answer would not fit in a message (the smaller of
   * ClientOptions.maxMessageBytes and limits.maxMessageBytes).
   */
  chunkRows?: number;
}

export interface CalibrationOptions extends CallOptions {
  /**
   * The most rows your model scores in all. Absent or 0: the server's default, 10 per
   * background row (1,000 for the default 100 background rows), 20 when sized for a refit
   * (`refit`). The server refuses (field
   * 'budget') too few rows per background row (its message says the least it takes), and
   * RESOURCE_EXHAUSTED when the rows would not fit in one message; the client refuses, before
   * sending, what is not a non-negative integer.
   */
  budget?: number | null;
  /** Seeds the proposed rows, in [0, 2^32) (default: the context's randomState). */
  randomState?: number | bigint | string | null;
  /**
   * calibrate(): true: the context's spec is sent along and the server refits the
   * surrogates on its rows and the scored rows (the more accurate; two fits' time); refused
   * before the model runs (field 'refit') unless the context is given as a spec that fits in
   * one message with the outputs (float64, shaped like its predictions; the message: 90 % of
   * the smaller of ClientOptions.maxMessageBytes and the server's limits.maxMessageBytes); its
   * rows and the budget past the server's limits.maxContextRows are refused before the model
   * runs too, as the server refuses them (RESOURCE_EXHAUSTED, field 'budget'). false: only the
   * surrogates' weights are refitted.
   * Absent or null (default): true when the context is a spec that fits in one message with
   * the outputs and whose rows and the budget are within limits.maxContextRows, else false.
   * Decided before the model runs, as the Python client decides (the same call gives the same
   * id from both): the model scores the default budget of what runs. Without a budget, where
   * the refit's default (20 rows per background row) does not fit (the message,
   * maxContextRows, or the server's message limit for the proposal itself), the weights'
   * default (10 per background row), refitted on when that fits (also with `refit: true`).
   * The answer's `calibrationRefitted` says whether the surrogates were refitted (by this
   * calibration, or by the one it follows).
   * proposeCalibration(): true sizes the default budget for such a refit.
   */
  refit?: boolean | null;
}

/** What proposeCalibration() resolves to: the rows for your model to score, once. */
export interface CalibrationProposal {
  /** (rows, d) float64, flat row-major (NaN where a background row has a missing value). */
  rows: Float64Array;
  /** [rows, d], rows <= budget. */
  shape: number[];
  /** The budget the rows were drawn for: the one asked for, or the server's default. */
  budget: number;
  contextId: string;
  artifactVersion: string;
  /** sha256 (hex) of the rows, as the server computed it: calibrate() sends it back with the
   * outputs, so that a server that would propose other rows (another version) refuses them. */
  proposalSha256: string;
}

export interface SurrogateDiagnostics {
  name: string;
  oofR2: number;
  weight: number;
}

/** How calibration changed one output of a calibrated context (see ShapleyClient.calibrate). */
export interface CalibrationDiagnostics {
  /** What the weighted mix of the surrogates is multiplied by (their weights sum to one). */
  scale: number;
  /**
   * R^2 of the surrogates' pair gaps f(row) - f(complement row) against your model's, over the
   * calibration rows: with the zero-shot weights, and with the calibrated ones (fitted to them).
   */
  gapR2ZeroShot: number;
  gapR2Calibrated: number;
}

export interface OutputDiagnostics {
  predictedFidelity: number;
  surrogates: SurrogateDiagnostics[];
  /** Set for a calibrated context only; null otherwise. */
  calibration: CalibrationDiagnostics | null;
}

export interface ContextInfo {
  contextId: string;
  nRows: number;
  nFeatures: number;
  nOutputs: number;
  singleOutput: boolean;
  featureNames: string[];
  nBackground: number;
  outputs: OutputDiagnostics[];
  artifactVersion: string;
  memoryBytes: number;
  fitSeconds: number;
  /** The groups as given; empty without groups. */
  groups: { name: string; columns: number[] }[];
  /** Names along the answers' second axis: the groups', or featureNames without groups. */
  attributionNames: string[];
  /** The categorical columns' indices, as sent; empty without. */
  categoricalColumns: number[];
  /**
   * Rows of your model scored to calibrate this context (calibrate()), over every calibration
   * that led to it; 0 when not calibrated. fitSeconds is then the time the last calibration took.
   */
  calibrationRows: number;
  /**
   * True when the surrogates were refitted on the context's rows and the scored rows: by this
   * calibration (calibrate() with `refit`) or by the one that made the context it calibrates
   * (weights only, again: the refitted members are kept); false when only their weights were,
   * or not calibrated.
   */
  calibrationRefitted: boolean;
  /**
   * Sets of attributions (indices along the answers' second axis) that the context's rows cannot
   * tell apart (a copy, x and log x, an indicator and its complement): explain's uncertainty for
   * them includes how their joint value could split; a refined answer tells them apart. Empty
   * without such sets.
   */
  aliases: { attributions: number[] }[];
}

export interface CreatedContext extends ContextInfo {
  /** False when the server already held this context: nothing was refitted. */
  created: boolean;
}

/**
 * What calibrate() resolves to: the calibrated context's info (calibrationRows > 0, each
 * output's `calibration` set) and `created`. Pass this object itself wherever a context goes:
 * the client keeps, with it, what re-creates it when the server has lost it (the context it came
 * from and your model's outputs), so keep passing the same object. Its fields are updated when
 * it is re-created, its contextId excepted: one that would come back under another id is refused.
 */
export interface CalibratedContext extends CreatedContext {}

export interface DeleteContextResult {
  contextId: string;
  freedBytes: number;
}

export interface ListContextsResult {
  /** Most recently used first when listed in one call; in context_id order when paged. */
  contexts: ContextInfo[];
  /** Bytes every held context takes. */
  totalBytes: number;
}

export interface ListContextsOptions extends CallOptions {
  /**
   * List in calls of at most this many contexts (an integer >= 1; anything else is refused
   * before sending, field 'page_size').
   */
  pageSize?: number;
}

export interface Limits {
  maxMessageBytes: number;
  maxContextRows: number;
  maxFeatures: number;
  maxOutputs: number;
  maxExplainRows: number;
  maxContexts: number;
  maxContextStoreBytes: number;
  maxConcurrentStreams: number;
  /** Most model rows per explained row a refinement budget may ask for. */
  maxBudget: number;
}

export interface ServerInfo {
  version: string;
  artifactVersion: string;
  artifactSha256: string;
  limits: Limits;
  contextsHeld: number;
  contextStoreBytes: number;
}

/** A row of a single-output explanation: d values and one base value. */
export interface SingleOutputRow {
  values: number[];
  uncertainty: number[];
  baseValue: number;
}

/** A row of a K-output explanation: values[j][k] and K base values. */
export interface MultiOutputRow {
  values: number[][];
  uncertainty: number[][];
  baseValue: number[];
}

/**
 * Attributions of m rows. values / uncertainty: flat row-major, shape [m, d] or [m, d, K];
 * baseValues: shape baseShape = [m] or [m, K]. `S` is `singleOutput`: the methods resolve to
 * `Explanation<true> | Explanation<false>`, so testing `e.singleOutput` types `e.row(i)`.
 */
export class Explanation<S extends boolean = boolean> {
  readonly contextId: string;
  readonly values: FloatArray;
  readonly shape: number[];
  readonly baseValues: FloatArray;
  readonly baseShape: number[];
  readonly uncertainty: FloatArray;
  /** What is attributed, along the values' second axis: the groups' names, or the features'. */
  readonly attributionNames: string[];
  /** The names of the explained rows' columns (the context's features). */
  readonly featureNames: string[];
  /** The context's info and diagnostics (null only if the server sent none). */
  readonly context: ContextInfo | null;
  readonly artifactVersion: string;
  /** Rows of your model used per explained row: 0 for a zero-shot answer, > 0 refined. */
  readonly modelRows: number;
  readonly nRows: number;
  /** Number of features (d): the rows' columns. */
  readonly nFeatures: number;
  /** Attributions per row (P): d without groups, the number of groups with them. */
  readonly nAttributions: number;
  readonly singleOutput: S;
  /** Row i as plain JS values. */
  row(i: number): S extends true ? SingleOutputRow : MultiOutputRow;
  /** Everything as nested JS arrays. */
  toNested(): { values: any[]; baseValues: any[]; uncertainty: any[] };
}

/** A request field at fault: one google.rpc.BadRequest.FieldViolation of the server's rich status. */
export interface FieldViolation {
  /** The request field, e.g. 'rows', 'context.predictions', 'context_id'. */
  field: string;
  /** What is wrong with it, e.g. 'has 2 features; the explainer was fitted on 3 (context ctx-...)'. */
  description: string;
}

/** Every method rejects with this: gRPC status name, the server's message, the fields at fault. */
export class ShapleyError extends Error {
  /** gRPC status name: 'INVALID_ARGUMENT', 'NOT_FOUND', 'RESOURCE_EXHAUSTED', 'UNAUTHENTICATED', ... */
  readonly code: string;
  /** The server's message; it starts with the field, e.g. "rows: has 5 features; ...". */
  readonly details: string;
  /**
   * The request fields at fault: the google.rpc.BadRequest field violations of the status the
   * server sent in the `grpc-status-details-bin` trailer (one entry for a refusal before sending).
   * Empty when none was named (e.g. UNAUTHENTICATED, UNAVAILABLE).
   */
  readonly violations: FieldViolation[];
  /** violations[0].field, e.g. 'rows', or null. */
  readonly field: string | null;
  /** The numeric gRPC status code. */
  readonly grpcCode: number;
  /** The call's trailing metadata, when the error came from the server. */
  readonly metadata: Metadata | null;
  constructor(code: string, details: string, violations?: FieldViolation[], extra?: {
    grpcCode?: number; metadata?: Metadata | null; cause?: unknown;
  });
}

export type ContextRef = string | ContextSpec | { contextId: string };

/** What explain() and explainStream() resolve to; `singleOutput` tells which. */
export type AnyExplanation = Explanation<true> | Explanation<false>;

export class ShapleyClient {
  readonly target: string;
  /** @param target host:port, e.g. '127.0.0.1:50051' */
  constructor(target: string, options?: ClientOptions);
  /**
   * Fit a context, or find it held (same data, same id). The spec object is remembered:
   * explain(spec, ...) later costs no CreateContext round trip. Treat it as immutable.
   * A spec too big for one message (see ClientOptions.maxMessageBytes) is sent in blocks of rows
   * over CreateContextStream; the id and the answer are the same.
   */
  createContext(spec: ContextSpec, options?: CallOptions): Promise<CreatedContext>;
  /**
   * Explain rows (m, d). A spec is created on first use and re-created (once) when the server
   * answers NOT_FOUND. With predictions, every row is exactly efficient:
   * sum_j values[i, j] == predictions[i] - baseValues[i].
   * With options.model and options.budget, the answer is refined past the zero-shot estimate:
   * in chunks, the server proposes rows (Propose), the client scores them with `model` and the
   * server refines the attributions from the outputs (Refine). A chunk is at most the server's
   * limits.maxExplainRows rows, its messages within the smaller of maxMessageBytes and the
   * server's limits.maxMessageBytes; the whole call's predictions are checked first.
   */
  explain(context: ContextRef, rows: ArrayInput, predictions?: ArrayInput | null,
    options?: RefineOptions): Promise<AnyExplanation>;
  /**
   * explain() for any number of rows, over ExplainStream in chunks of options.chunkRows (default:
   * within the server's limits, see StreamOptions.chunkRows). The whole call's predictions are
   * checked against the rows before the first chunk goes, refused as explain() refuses them.
   */
  explainStream(context: ContextRef, rows: ArrayInput, predictions?: ArrayInput | null,
    options?: StreamOptions): Promise<AnyExplanation>;
  /**
   * The rows your model should score, once, to calibrate a context (calibrate() does the whole
   * round trip). The same arguments always give the same rows. Same context rules as explain().
   */
  proposeCalibration(context: ContextRef, options?: CalibrationOptions): Promise<CalibrationProposal>;
  /**
   * The context calibrated on your model: ProposeCalibration, `model` called once on the
   * proposed rows, Calibrate. Resolves to a new context (the one given is left as it was; the
   * same outputs give the same id, `created` false) whose surrogates (refitted, or only their
   * weights: see options.refit) follow your model on rows that mix background rows; explain, explainStream and refine against it like any
   * context. When the server no longer holds it, the client re-creates it, without calling
   * `model` again: Calibrate with the outputs it kept, against the context it came from (itself
   * re-created first when that is a spec, or a calibrated context, the server lost too: every
   * calibration that led to it is replayed, in order; an id alone cannot be). Each step must give
   * the id recorded for it; a context that comes back under another id is refused (NOT_FOUND,
   * field context_id) and never explained against.
   * @param model your model, called as in explain(..., {model}); its outputs are (rows,) or
   *   (rows, K) like the context's predictions
   */
  calibrate(context: ContextRef, model: Model, options?: CalibrationOptions): Promise<CalibratedContext>;
  /**
   * The info and diagnostics of a context. Same context rules as explain(): a spec is created on
   * first use, and a spec or a calibrated context is re-created (once) when the server answers
   * NOT_FOUND; an id (or another object with contextId) is looked up as it is.
   */
  getContext(context: ContextRef, options?: CallOptions): Promise<ContextInfo>;
  deleteContext(contextId: string | { contextId: string }, options?: CallOptions): Promise<DeleteContextResult>;
  listContexts(options?: ListContextsOptions): Promise<ListContextsResult>;
  serverInfo(options?: CallOptions): Promise<ServerInfo>;
  /** grpc.health.v1 status: 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN' or 'UNKNOWN'. */
  health(service?: string, options?: CallOptions): Promise<string>;
  /** Poll health until SERVING (timeout in seconds, default 120). */
  waitForServing(options?: { timeout?: number; interval?: number }): Promise<void>;
  close(): void;
}

export const DEFAULT_PROTO_PATHS: string[];
/** 1000: explainStream's most rows per chunk when options.chunkRows is not given. */
export const DEFAULT_CHUNK_ROWS: number;
/** 67108864 (64 MiB): the default of ClientOptions.maxMessageBytes, the server's default limit. */
export const DEFAULT_MAX_MESSAGE_BYTES: number;
export const DEFAULT_MAX_ATTEMPTS: number;
/** The gRPC service config retrying every call that fails UNAVAILABLE (see ClientOptions.maxAttempts). */
export function retryServiceConfig(maxAttempts?: number): object;
