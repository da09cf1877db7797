import {UsageError} from '../errors.js'

/** Values that publish URIs may reference as `{name}`. */
export interface TemplateVars {
  'run.id': string
  'pipeline.name': string
  'stage.id': string
  'artifact.sha256': string
  /** UTC date, `YYYY-MM-DD`. */
  date: string
}

export const TEMPLATE_NAMES: readonly (keyof TemplateVars)[] = ['run.id', 'pipeline.name', 'stage.id', 'artifact.sha256', 'date']

const PLACEHOLDER = /\{([^{}]*)\}/g

export function utcDate(now = new Date()): string {
  return now.toISOString().slice(0, 10)
}

/** Whether `text` contains at least one `{name}` placeholder. */
export function hasPlaceholder(text: string): boolean {
  return /\{[^{}]*\}/.test(text)
}

/**
 * Expand `{run.id}`-style placeholders. An unknown name is an error rather than left verbatim: a typo
 * would otherwise publish every run into one literal `{runid}` directory.
 */
export function expandTemplate(template: string, vars: TemplateVars): string {
  return template.replace(PLACEHOLDER, (whole, name: string) => {
    const key = name.trim() as keyof TemplateVars
    if (!TEMPLATE_NAMES.includes(key)) {
      throw new UsageError(`unknown placeholder ${whole} in publish target '${template}'`, {
        code: 'E_PUBLISH_TEMPLATE',
        tryMessage: `Use one of ${TEMPLATE_NAMES.map((n) => `{${n}}`).join(', ')}.`,
      })
    }
    const value = vars[key]
    // A value with a separator would silently change the layout of the destination.
    if (!value || value.includes('/') || value.includes('\\') || value === '.' || value === '..') {
      throw new UsageError(`placeholder ${whole} expands to '${value}', which cannot be used as a path segment`, {
        code: 'E_PUBLISH_TEMPLATE',
        tryMessage: 'Use names without slashes for the pipeline name and run id.',
      })
    }
    return value
  })
}

/** Placeholders that vary per publish; a last segment using one of them names the version. */
const VERSION_NAMES = ['run.id', 'artifact.sha256', 'date']

function namesVersion(segment: string): boolean {
  return [...segment.matchAll(PLACEHOLDER)].some((m) => VERSION_NAMES.includes(m[1].trim()))
}

/**
 * Split a target path into the root that holds versions (and the `latest` pointer) and the version
 * name. The last segment is the version when it uses a per-publish placeholder (`models/x/{run.id}/`,
 * `{date}-{artifact.sha256}`); otherwise the whole path is the root and the run id is appended as the
 * version (`models/{pipeline.name}/` → `models/fashion/<run id>/`), so every publish gets its own folder.
 */
export function splitVersion(templatePath: string, vars: TemplateVars): {root: string; version: string} {
  const trimmed = templatePath.replace(/\/+$/, '')
  const cut = trimmed.lastIndexOf('/')
  const last = trimmed.slice(cut + 1)
  if (last && namesVersion(last)) {
    return {root: expandTemplate(trimmed.slice(0, cut + 1), vars), version: expandTemplate(last, vars)}
  }
  const root = trimmed === '' ? (templatePath.startsWith('/') ? '/' : '') : `${trimmed}/`
  return {root: expandTemplate(root, vars), version: expandTemplate('{run.id}', vars)}
}
