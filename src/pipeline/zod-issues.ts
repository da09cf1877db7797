import type {z} from 'zod'
import type {SourceIssue} from '../errors.js'
import type {DocPath, SourceFile} from './source.js'
import {closest, didYouMean} from './suggest.js'

/**
 * Turn zod issues into positioned, readable pipeline-file issues: the position of the offending
 * key or value, what was expected, and a did-you-mean drawn from the schema itself (its object
 * keys, its enum values).
 */

type AnySchema = z.ZodType
interface Def {
  type: string
  shape?: Record<string, AnySchema>
  element?: AnySchema
  innerType?: AnySchema
  options?: AnySchema[]
  valueType?: AnySchema
  in?: AnySchema
  out?: AnySchema
  getter?: () => AnySchema
  left?: AnySchema
  right?: AnySchema
  items?: AnySchema[]
  rest?: AnySchema | null
}

function defOf(schema: AnySchema): Def {
  // A custom stage may bring its own zod copy or a look-alike: without zod internals, no key hints.
  return (schema as unknown as {_zod?: {def?: Def}})?._zod?.def ?? {type: 'unknown'}
}

/** The schemas that can describe the value at `path` (several under unions). */
function schemasAt(schema: AnySchema, path: DocPath, depth = 0): AnySchema[] {
  if (depth > 64) return []
  const def = defOf(schema)
  switch (def.type) {
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'catch':
    case 'readonly':
    case 'nonoptional':
      return def.innerType ? schemasAt(def.innerType, path, depth + 1) : []
    case 'pipe':
      return def.in ? schemasAt(def.in, path, depth + 1) : []
    case 'lazy':
      return def.getter ? schemasAt(def.getter(), path, depth + 1) : []
    case 'union':
      return (def.options ?? []).flatMap((o) => schemasAt(o, path, depth + 1))
    case 'intersection':
      return [def.left, def.right].flatMap((o) => (o ? schemasAt(o, path, depth + 1) : []))
    default:
      break
  }
  if (path.length === 0) return [schema]
  const [seg, ...rest] = path
  if (def.type === 'object' && def.shape && typeof seg === 'string' && seg in def.shape) return schemasAt(def.shape[seg], rest, depth + 1)
  if (def.type === 'array' && def.element) return schemasAt(def.element, rest, depth + 1)
  if (def.type === 'record' && def.valueType) return schemasAt(def.valueType, rest, depth + 1)
  if (def.type === 'tuple' && typeof seg === 'number') {
    const item = def.items?.[seg] ?? def.rest
    return item ? schemasAt(item, rest, depth + 1) : []
  }
  return []
}

/** Keys an object at `path` accepts, per the schema. */
export function knownKeysAt(schema: AnySchema, path: DocPath): string[] {
  const keys = new Set<string>()
  for (const s of schemasAt(schema, path)) {
    const def = defOf(s)
    if (def.type === 'object' && def.shape) for (const k of Object.keys(def.shape)) keys.add(k)
  }
  return [...keys]
}

/** `stages[2].with.sparsity` */
export function formatPath(path: DocPath): string {
  let out = ''
  for (const seg of path) out += typeof seg === 'number' ? `[${seg}]` : out === '' ? seg : `.${seg}`
  return out || '(top level)'
}

function valueAt(data: unknown, path: DocPath): unknown {
  let v = data
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined
    v = (v as Record<string | number, unknown>)[seg]
  }
  return v
}

/** A type name for messages; never the value itself, which may be a secret. */
export function typeName(value: unknown): string {
  if (value === null) return 'null'
  if (value === undefined) return 'nothing'
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'object') return 'a mapping'
  if (typeof value === 'number') return Number.isInteger(value) ? 'an integer' : 'a number'
  return `a ${typeof value}`
}

function expectedName(expected: string): string {
  switch (expected) {
    case 'object':
      return 'a mapping'
    case 'array':
      return 'a list'
    case 'int':
      return 'an integer'
    case 'record':
      return 'a mapping'
    case 'tuple':
      return 'a list'
    case 'string':
    case 'number':
    case 'boolean':
      return `a ${expected}`
    default:
      return expected
  }
}

function quoteValues(values: readonly unknown[]): string {
  return values.map((v) => (typeof v === 'string' ? `\`${v}\`` : String(v))).join(', ')
}

/**
 * Positioned issues for a failed `safeParse` of `data`, whose root sits at `base` in the document.
 * `context` names what was being checked (e.g. `stage 'prune'`) for messages.
 */
export function mapZodIssues(
  error: z.ZodError,
  data: unknown,
  schema: AnySchema,
  source: SourceFile,
  base: DocPath = [],
): SourceIssue[] {
  const out: SourceIssue[] = []
  for (const issue of error.issues) {
    const rel = issue.path.filter((p): p is string | number => typeof p !== 'symbol')
    const at = [...base, ...rel]
    const where = formatPath(at)
    const value = valueAt(data, rel)
    switch (issue.code) {
      case 'unrecognized_keys': {
        const known = knownKeysAt(schema, rel)
        for (const key of issue.keys) {
          const near = closest(key, known)
          const listed = known.length > 0 && known.length <= 16 ? `; expected one of: ${quoteValues(known)}` : ''
          out.push(
            source.issueAt([...at, key], `unknown key \`${key}\` in ${where}${listed}`, {
              atKey: true,
              suggestion: near ? `did you mean \`${near}\`?` : undefined,
            }),
          )
        }
        break
      }
      case 'invalid_key': {
        const key = String(rel.at(-1) ?? '')
        const nested = (issue as unknown as {issues?: z.core.$ZodIssue[]}).issues ?? []
        const why = nested.map((i) => i.message).join('; ') || 'not allowed here'
        out.push(source.issueAt(at, `${formatPath(at.slice(0, -1))}: invalid name \`${key}\`: ${why}`, {atKey: true}))
        break
      }
      case 'invalid_type': {
        const expected = expectedName(issue.expected)
        if (value === undefined) {
          const parent = at.slice(0, -1)
          const key = at.at(-1)
          out.push(source.issueAt(parent, `missing required field \`${String(key)}\` in ${formatPath(parent)} (expected ${expected})`))
        } else {
          out.push(source.issueAt(at, `${where}: expected ${expected}, got ${typeName(value)}`))
        }
        break
      }
      case 'invalid_value': {
        const expected = issue.values.length === 1 ? quoteValues(issue.values) : `one of ${quoteValues(issue.values)}`
        const strings = issue.values.filter((v): v is string => typeof v === 'string')
        const suggestion = typeof value === 'string' && strings.length > 0 ? didYouMean(value, strings, {listUpTo: 0}) : undefined
        out.push(source.issueAt(at, `${where}: expected ${expected}${typeof value === 'string' ? `, got \`${value}\`` : `, got ${typeName(value)}`}`, {suggestion}))
        break
      }
      case 'invalid_union': {
        if (value === undefined) {
          const parent = at.slice(0, -1)
          out.push(source.issueAt(parent, `missing required field \`${String(at.at(-1))}\` in ${formatPath(parent)}`))
          break
        }
        // Report the alternative that came closest (fewest nested issues) rather than "invalid input".
        const nested = (issue as unknown as {errors?: z.core.$ZodIssue[][]}).errors ?? []
        // An alternative whose type matched (its issues are deeper inside) says most about the mistake.
        const matchedType = (e: z.core.$ZodIssue[]): boolean => e.length > 0 && e.every((i) => i.path.length > 0 || (i.code !== 'invalid_type' && i.code !== 'invalid_union'))
        const best = nested.filter(matchedType).sort((a, b) => a.length - b.length)[0]
        if (best) {
          out.push(...mapZodIssues({issues: best.map((i) => ({...i, path: [...rel, ...i.path]}))} as z.ZodError, data, schema, source, base))
        } else {
          const types = [...new Set(nested.flat().filter((i) => i.code === 'invalid_type' && i.path.length === 0).map((i) => expectedName((i as {expected: string}).expected)))]
          const expected = types.length > 0 ? types.join(' or ') : 'one of the accepted forms'
          out.push(source.issueAt(at, `${where}: expected ${expected}, got ${typeName(value)}`))
        }
        break
      }
      default: {
        // too_small, too_big, invalid_format, not_multiple_of, custom: zod's message says what was expected.
        const message = issue.message.replace(/^(Invalid input|Too small|Too big|Invalid string): /, '')
        out.push(source.issueAt(at, `${where}: ${message.length > 0 ? message[0].toLowerCase() + message.slice(1) : 'invalid value'}`))
      }
    }
  }
  return out
}
