import * as fsp from 'node:fs/promises'
import path from 'node:path'
import {KilnError} from '../errors.js'
import {listFiles, sha256File} from '../util/fs.js'

/** One file of an artifact as it will be published. */
export interface ArtifactFile {
  /** POSIX path relative to the artifact root (for a single-file artifact, its base name). */
  rel: string
  /** Absolute path on disk. */
  abs: string
  bytes: number
  sha256: string
}

/**
 * The files an artifact consists of: every file of a directory (after sign/encrypt), or the one
 * file itself. Digests are taken once here so every target publishes and verifies the same bytes;
 * `knownFileSha256` skips re-reading a single-file artifact whose digest the runner already recorded.
 */
export async function artifactFiles(artifactPath: string, knownFileSha256?: string): Promise<ArtifactFile[]> {
  let st
  try {
    st = await fsp.stat(artifactPath)
  } catch (error) {
    throw new KilnError(`artifact not found: ${artifactPath}`, {code: 'E_ARTIFACT_MISSING', cause: error, tryMessage: 'Check the path; a run keeps its outputs under .kiln/runs/<run>/artifacts/.'})
  }
  const entries = st.isDirectory()
    ? (await listFiles(artifactPath)).map((rel) => ({rel, abs: path.join(artifactPath, rel)}))
    : [{rel: path.basename(artifactPath), abs: artifactPath}]
  if (entries.length === 0) {
    throw new KilnError(`artifact directory ${artifactPath} is empty`, {code: 'E_ARTIFACT_EMPTY', tryMessage: 'Publish a model file or a directory produced by sign/encrypt.'})
  }
  const out: ArtifactFile[] = []
  for (const e of entries) {
    const s = await fsp.stat(e.abs)
    out.push({...e, bytes: s.size, sha256: (!st.isDirectory() && knownFileSha256) || (await sha256File(e.abs))})
  }
  return out
}
