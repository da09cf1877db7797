import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {KilnError, ModelError} from '../errors.js'
import {allTensors} from '../onnx/graph.js'
import {readModel} from '../onnx/model.js'
import {DataLocation} from '../onnx/proto.js'
import type {DigestMemo} from './cache.js'

/**
 * The files that make up a model input, for its digest: an ONNX file plus its external data files,
 * or a TF.js model.json plus its weight shards.
 */
export async function inputArtifactFiles(model: string, memo?: DigestMemo): Promise<string[]> {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(model) && !model.startsWith('file://')) {
    throw new KilnError(`model URI ${model} is not supported as a pipeline input yet`, {
      exitCode: 2,
      tryMessage: 'Download the model first and point `model:` at the local file.',
    })
  }
  const file = model.startsWith('file://') ? new URL(model).pathname : model
  if (file.endsWith('.json')) {
    let manifest: {weightsManifest?: {paths?: string[]}[]}
    try {
      manifest = JSON.parse(await fsp.readFile(file, 'utf8'))
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      throw new ModelError(code ? `cannot read model ${file}: ${code}` : `model ${file} is not valid JSON: ${(error as Error).message}`, {
        code: code === 'ENOENT' ? 'E_MODEL_MISSING' : 'E_MODEL_CORRUPT',
      })
    }
    const shards = (manifest.weightsManifest ?? []).flatMap((g) => g.paths ?? []).map((p) => path.resolve(path.dirname(file), p))
    return [file, ...shards]
  }
  // Memoised with the file's digest; a file that cannot be read goes to the parser, which says why.
  const readable = await fsp.stat(file).then((st) => st.isFile(), () => false)
  const locations = memo && readable ? await memo.derived(file, 'externalData', () => externalLocations(file)) : await externalLocations(file)
  const external = new Set(locations.map((l) => path.resolve(path.dirname(file), l)))
  return [file, ...[...external].sort()]
}

/** The external data files an ONNX model names, as written in it (relative to the model). */
async function externalLocations(file: string): Promise<string[]> {
  const onnx = await readModel(file, {loadExternalData: false})
  const out = new Set<string>()
  for (const {tensor} of allTensors(onnx)) {
    if (tensor.dataLocation !== DataLocation.EXTERNAL) continue
    const location = tensor.externalData.find((e) => e.key === 'location')?.value
    if (location) out.add(location)
  }
  return [...out].sort()
}
