import net from 'node:net'

/** What the proxy does to a request once it has carried `afterBytes` from the client. */
export type FaultKind = 'reset' | 'http503' | 'stall' | 'corrupt'

export interface Fault {
  kind: FaultKind
  /** Bytes of the request (line, headers and body) that pass before the fault strikes. */
  afterBytes: number
  /** How many requests it strikes (Infinity: every one that matches and gets that far). */
  times: number
  /** Only requests whose `METHOD path?query` matches. */
  match?: RegExp
}

const REQUEST_LINE = /(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP\/1\.1\r\n/g

/**
 * A TCP proxy in front of the S3 server that injects network faults into requests: a connection
 * reset mid-request, an HTTP 503 answer, a stalled connection, or a flipped byte in a request body.
 */
export class FaultProxy {
  private server = net.createServer((c) => this.handle(c))
  private faults: Fault[] = []
  private sockets = new Set<net.Socket>()
  /** Faults that actually struck, by kind. */
  readonly struck: Record<FaultKind, number> = {reset: 0, http503: 0, stall: 0, corrupt: 0}
  port = 0

  constructor(private readonly upstreamPort: number) {}

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.port = (this.server.address() as net.AddressInfo).port
    return `http://127.0.0.1:${this.port}`
  }

  inject(fault: Fault): void {
    this.faults.push({...fault})
  }

  /** Remove pending faults and cut every open connection (stalled ones included). */
  clear(): void {
    this.faults = []
    for (const s of this.sockets) s.destroy()
  }

  async stop(): Promise<void> {
    this.clear()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  private handle(client: net.Socket): void {
    const upstream = net.connect(this.upstreamPort, '127.0.0.1')
    this.sockets.add(client)
    this.sockets.add(upstream)
    let seen = 0
    let requestStart = 0
    let request = ''
    // Where the current request's headers ended: a flipped byte must land in a body, not a header.
    let bodyStart = Number.POSITIVE_INFINITY
    let stalled = false
    const drop = (): void => {
      this.sockets.delete(client)
      this.sockets.delete(upstream)
    }
    client.on('close', () => (upstream.destroy(), drop()))
    upstream.on('close', () => (client.destroy(), drop()))
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
    upstream.on('data', (d) => {
      if (!stalled) client.write(d)
    })
    client.on('data', (d: Buffer) => {
      if (stalled) return
      const before = seen
      seen += d.length
      const text = d.toString('latin1')
      for (const m of text.matchAll(REQUEST_LINE)) {
        requestStart = before + m.index
        request = `${m[1]} ${m[2]}`
        const end = text.indexOf('\r\n\r\n', m.index)
        bodyStart = end >= 0 ? before + end + 4 : Number.POSITIVE_INFINITY
      }
      const corruptAt = (f: Fault): number => Math.max(requestStart + f.afterBytes, bodyStart + 65_536)
      const fault = this.faults.find((f) => {
        if (f.times <= 0 || (f.match && !f.match.test(request))) return false
        if (f.kind === 'corrupt') return corruptAt(f) >= before && corruptAt(f) < seen
        return seen - requestStart > f.afterBytes
      })
      if (!fault) {
        upstream.write(d)
        return
      }
      fault.times--
      this.struck[fault.kind]++
      switch (fault.kind) {
        case 'reset':
          upstream.write(d.subarray(0, Math.max(0, requestStart + fault.afterBytes - before)))
          client.resetAndDestroy()
          upstream.destroy()
          return
        case 'http503': {
          const body = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>'
          client.end(`HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`)
          upstream.destroy()
          return
        }
        case 'stall':
          // Bytes stop flowing both ways; only the client's timeout can notice.
          stalled = true
          return
        case 'corrupt': {
          const copy = Buffer.from(d)
          copy[corruptAt(fault) - before] ^= 0x01
          upstream.write(copy)
          return
        }
      }
    })
  }
}
