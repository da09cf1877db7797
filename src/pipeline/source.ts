import {isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node} from 'yaml'
import type {SourceIssue} from '../errors.js'

/**
 * A parsed pipeline file that remembers where every value came from, so errors found later (by
 * the schema, by a stage's own schema, by reference checks) can point at `file:line:col`.
 * cosmiconfig's YAML parser drops positions, so the file is parsed here with `yaml` + LineCounter.
 */
export type DocPath = readonly (string | number)[]

export interface Position {
  line: number
  col: number
}

export class SourceFile {
  readonly doc: Document.Parsed
  private readonly lines = new LineCounter()

  constructor(
    /** Absolute path. */
    readonly file: string,
    /** Path shown in messages (relative to the working directory when inside it). */
    readonly displayName: string,
    readonly text: string,
  ) {
    // JSON (.kilnrc.json) is valid YAML 1.2, so one parser gives positions for every format.
    this.doc = parseDocument(text, {lineCounter: this.lines, prettyErrors: true, uniqueKeys: true})
  }

  /** YAML syntax errors, each at its own position. */
  syntaxIssues(): SourceIssue[] {
    return this.doc.errors.map((e) => {
      const pos = e.linePos?.[0] ?? this.lines.linePos(e.pos[0])
      // prettyErrors appends " at line L, column C:" and a code excerpt; the position is reported separately.
      const message = e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')
      return {file: this.displayName, line: pos.line, col: pos.col, message: `YAML syntax error: ${lowerFirst(message)}`, suggestion: syntaxHint(e.code)}
    })
  }

  /** Position of the value at `path`, or of the nearest enclosing value that exists. */
  positionOf(path: DocPath): Position {
    return this.offsetToPosition(this.locate(path, false))
  }

  /** Position of the key at the end of `path` (for unknown keys), else as {@link positionOf}. */
  keyPositionOf(path: DocPath): Position {
    return this.offsetToPosition(this.locate(path, true))
  }

  /** A {@link SourceIssue} at `path`. */
  issueAt(path: DocPath, message: string, options: {suggestion?: string; atKey?: boolean} = {}): SourceIssue {
    const pos = options.atKey ? this.keyPositionOf(path) : this.positionOf(path)
    return {file: this.displayName, line: pos.line, col: pos.col, message, ...(options.suggestion ? {suggestion: options.suggestion} : {})}
  }

  private offsetToPosition(offset: number): Position {
    const p = this.lines.linePos(offset)
    return {line: p.line, col: p.col}
  }

  private locate(path: DocPath, atKey: boolean): number {
    let node: unknown = this.doc.contents
    let offset = rangeStart(node) ?? 0
    for (let i = 0; i < path.length; i++) {
      if (isAlias(node)) node = node.resolve(this.doc)
      const seg = path[i]
      const last = i === path.length - 1
      if (isMap(node)) {
        const pair = node.items.find((p) => isPair(p) && keyText(p.key) === String(seg))
        if (!pair) return offset
        const keyStart = rangeStart(pair.key)
        if (last && atKey && keyStart !== undefined) return keyStart
        // `key:` with nothing after it has no value node: point at the key.
        const valueStart = rangeStart(pair.value)
        offset = valueStart ?? keyStart ?? offset
        node = pair.value
      } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
        node = node.items[seg]
        offset = rangeStart(node) ?? offset
      } else {
        return offset
      }
    }
    return offset
  }
}

function rangeStart(node: unknown): number | undefined {
  return node && typeof node === 'object' && 'range' in node ? (node as Node).range?.[0] : undefined
}

function keyText(key: unknown): string | undefined {
  if (isScalar(key)) return String(key.value)
  return typeof key === 'string' ? key : undefined
}

function lowerFirst(s: string): string {
  return s.length > 0 ? s[0].toLowerCase() + s.slice(1) : s
}

function syntaxHint(code: string): string | undefined {
  switch (code) {
    case 'DUPLICATE_KEY':
      return 'remove or rename one of the duplicate keys'
    case 'BAD_INDENT':
    case 'MISSING_CHAR':
      return 'check indentation and that every `{` / `[` is closed'
    case 'TAB_AS_INDENT':
      return 'indent with spaces, not tabs'
    case 'BLOCK_AS_IMPLICIT_KEY':
    case 'MULTILINE_IMPLICIT_KEY':
      return 'put a space after `:` and quote values that contain `: `'
    default:
      return undefined
  }
}
