import {z} from 'zod'

/**
 * The pipeline file (`kiln.yaml`), defined once. The loader validates against it, and
 * `scripts/export-schema.js` turns it into `schemas/pipeline.schema.json` for editors, so every
 * field carries a description. Objects are strict: an unknown key is an error, never ignored.
 */

/** Stage ids and pipeline names become directory names, so keep them path-safe. */
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/
const SAFE_NAME_RULE = 'expected letters, digits, `.`, `_` and `-`, starting with a letter or digit'

export const ProfileSchema = z
  .strictObject({
    threads: z.number().int().min(1).optional().describe('Intra-op threads for onnxruntime sessions (default: as the built-in `cpu-2t`).'),
    interOpThreads: z.number().int().min(1).optional().describe('Inter-op threads (used with `executionMode: parallel`).'),
    providers: z
      .array(z.string().min(1))
      .min(1)
      .default(['cpu'])
      .describe('Execution providers in priority order, e.g. `[cpu]`.'),
    graphOptimizationLevel: z
      .enum(['disabled', 'basic', 'extended', 'all'])
      .optional()
      .describe('onnxruntime graph optimisation level (default `all`).'),
    executionMode: z.enum(['sequential', 'parallel']).optional().describe('onnxruntime execution mode (default `sequential`).'),
    batch: z.array(z.number().int().min(1)).min(1).default([1]).describe('Batch sizes to benchmark.'),
    concurrency: z.number().int().min(1).optional().describe('Concurrent requests during a benchmark.'),
    warmup: z.number().int().min(0).optional().describe('Warm-up iterations discarded before measuring.'),
    iterations: z.number().int().min(1).optional().describe('Measured iterations per batch size.'),
    durationMs: z.number().positive().optional().describe('Measure for this long instead of a fixed number of iterations.'),
  })
  // Settings that the others would make unread are refused where they are written.
  .refine((p) => p.iterations === undefined || p.durationMs === undefined, {message: 'give `iterations` or `durationMs`, not both: a duration overrides the count', path: ['durationMs']})
  .refine((p) => p.interOpThreads === undefined || p.executionMode === 'parallel', {message: '`interOpThreads` is used with `executionMode: parallel` only', path: ['interOpThreads']})
  .describe('A hardware profile for sessions and benchmarks.')

const sizeSchema = z.union([z.number().int().min(1), z.tuple([z.number().int().min(1), z.number().int().min(1)])])
const perChannel = z.union([z.number(), z.array(z.number()).min(1)])

export const PreprocessSchema = z
  .strictObject({
    resize: sizeSchema.optional().describe('Resize images to `[height, width]` (a single number: square).'),
    crop: sizeSchema.optional().describe('Centre-crop to `[height, width]` after resizing (a single number: square).'),
    layout: z.enum(['NCHW', 'NHWC']).optional().describe('Tensor layout the model expects.'),
    scale: z.number().optional().describe('Multiply raw values by this first, e.g. `0.00392156862745098` (1/255).'),
    mean: perChannel.optional().describe('Subtract this mean (one value, or one per channel).'),
    std: perChannel.optional().describe('Divide by this standard deviation (one value, or one per channel).'),
    dtype: z.enum(['float32', 'float16', 'uint8', 'int8', 'int32', 'int64']).optional().describe('Element type of the model input.'),
  })
  .describe('Preprocessing applied to each sample before it reaches the model.')

export const DatasetSchema = z
  .strictObject({
    path: z.string().min(1).describe('File or directory, relative to the pipeline file.'),
    format: z
      .enum(['npz', 'npy', 'idx', 'csv', 'jsonl', 'images'])
      .optional()
      .describe('Reader to use; by default it follows the file extension (a directory means `images`).'),
    inputs: z
      .record(z.string(), z.string())
      .optional()
      .describe('Model input name → field (array) name in the dataset. Not needed when the names match.'),
    labels: z.string().optional().describe('Field holding the labels (default `label` or `labels` when present).'),
    limit: z.number().int().min(1).optional().describe('Use at most this many samples.'),
    shuffle: z.boolean().optional().describe('Shuffle samples before taking `limit` of them.'),
    seed: z.number().int().optional().describe('Seed for `shuffle`, so runs are reproducible.'),
    preprocess: PreprocessSchema.optional(),
  })
  .refine((d) => d.seed === undefined || d.shuffle === true, {message: '`seed` applies with `shuffle: true`', path: ['seed']})
  .describe('A dataset that stages refer to by name (calibration, evaluation).')

export const StageEntrySchema = z
  .strictObject({
    uses: z.string().min(1).describe('A built-in stage kind (`convert`, `quantize`...) or a module path such as `./stages/my-stage.js`.'),
    with: z
      .record(z.string(), z.unknown())
      .nullable()
      .default({})
      .describe("The stage's parameters; each kind documents its own. Empty or left out: the stage's defaults."),
    id: z
      .string()
      .regex(SAFE_NAME, SAFE_NAME_RULE)
      .optional()
      .describe('Unique id of this stage (default: its kind). Used by `--from`, `--only`, `baseline:` and the run directory.'),
  })
  .describe('One step of the pipeline.')

export const PipelineSchema = z
  .strictObject({
    $schema: z.string().optional().describe('JSON Schema reference for editors; ignored by kiln.'),
    version: z.literal(1).describe('Pipeline file format version.'),
    name: z
      .string()
      .regex(SAFE_NAME, SAFE_NAME_RULE)
      .describe('Pipeline name, used in run directory names and reports.'),
    model: z.string().min(1).describe('The input model: a path relative to this file or a URI (`.onnx`, TF.js `model.json`).'),
    target: z.string().min(1).default('cpu-2t').describe('Hardware profile benchmarks run on: built-in (`cpu-1t`, `cpu-2t`, `cpu-all`) or one under `profiles`.'),
    profiles: z.record(z.string().regex(SAFE_NAME, SAFE_NAME_RULE), ProfileSchema).default({}).describe('Custom hardware profiles beside the built-in ones.'),
    datasets: z.record(z.string().regex(SAFE_NAME, SAFE_NAME_RULE), DatasetSchema).default({}).describe('Datasets, by name.'),
    stages: z.array(StageEntrySchema).min(1).describe('The stages, run in order; each gets the previous one\'s output.'),
  })
  .describe('A kiln pipeline: one model through convert → prune → quantize → evaluate → sign → encrypt → publish.')

/** The file as written (before defaults). */
export type PipelineFileInput = z.input<typeof PipelineSchema>
/** The file after validation and defaults. */
export type PipelineFile = z.output<typeof PipelineSchema>
