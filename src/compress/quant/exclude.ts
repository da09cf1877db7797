import type {NodeProto} from '../../onnx/proto.js'

/**
 * Exclusion rules: each pattern matches a node by exact name, by op type (`Conv`, or `op:Conv`),
 * by glob on the name (`*head*`), or by regular expression (`/^block_1[0-9]/`).
 */
export function makeExcluder(patterns: readonly string[] = []): (node: NodeProto) => boolean {
  const tests = patterns.map((p): ((n: NodeProto) => boolean) => {
    if (p.startsWith('op:')) {
      const op = p.slice(3)
      return (n) => n.opType === op
    }
    if (p.length > 2 && p.startsWith('/') && p.endsWith('/')) {
      const re = new RegExp(p.slice(1, -1))
      return (n) => re.test(n.name)
    }
    if (/[*?]/.test(p)) {
      const re = new RegExp(`^${p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`)
      return (n) => re.test(n.name)
    }
    return (n) => n.name === p || n.opType === p
  })
  return (node) => tests.some((t) => t(node))
}
