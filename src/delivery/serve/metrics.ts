/**
 * A small Prometheus registry (text exposition format 0.0.4): counters and histograms keyed by
 * label values, and gauges read when scraped. Enough for a server with a handful of series per
 * model; no client library needed.
 */
type Labels = Record<string, string>

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')
}

function labelText(labels: Labels, extra?: [string, string]): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`)
  if (extra) parts.push(`${extra[0]}="${escapeLabel(extra[1])}"`)
  return parts.length ? `{${parts.join(',')}}` : ''
}

/** The series a label set belongs to, whatever order its keys came in. Runs several times per request: kept cheap. */
function keyOf(labels: Labels): string {
  let key = ''
  for (const k of Object.keys(labels).sort()) key += `${k}\u0000${labels[k]}\u0001`
  return key
}

interface Metric {
  render(): string
}

export class Counter implements Metric {
  private readonly values = new Map<string, {labels: Labels; value: number}>()
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  inc(labels: Labels = {}, by = 1): void {
    const k = keyOf(labels)
    const e = this.values.get(k)
    if (e) e.value += by
    else this.values.set(k, {labels, value: by})
  }

  get(labels: Labels = {}): number {
    return this.values.get(keyOf(labels))?.value ?? 0
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`]
    for (const {labels, value} of this.values.values()) lines.push(`${this.name}${labelText(labels)} ${value}`)
    return lines.join('\n')
  }
}

export class Histogram implements Metric {
  private readonly series = new Map<string, {labels: Labels; counts: number[]; sum: number; count: number}>()
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: number[],
  ) {}

  observe(labels: Labels, value: number): void {
    const k = keyOf(labels)
    let s = this.series.get(k)
    if (!s) {
      s = {labels, counts: this.buckets.map(() => 0), sum: 0, count: 0}
      this.series.set(k, s)
    }
    for (const [i, le] of this.buckets.entries()) if (value <= le) s.counts[i]!++
    s.sum += value
    s.count++
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`]
    for (const s of this.series.values()) {
      for (const [i, le] of this.buckets.entries()) lines.push(`${this.name}_bucket${labelText(s.labels, ['le', String(le)])} ${s.counts[i]}`)
      lines.push(`${this.name}_bucket${labelText(s.labels, ['le', '+Inf'])} ${s.count}`, `${this.name}_sum${labelText(s.labels)} ${s.sum}`, `${this.name}_count${labelText(s.labels)} ${s.count}`)
    }
    return lines.join('\n')
  }
}

export class Gauge implements Metric {
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly read: () => Array<{labels?: Labels; value: number}>,
  ) {}

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`]
    for (const {labels, value} of this.read()) lines.push(`${this.name}${labelText(labels ?? {})} ${value}`)
    return lines.join('\n')
  }
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** The server's metrics. */
export class ServeMetrics {
  readonly requests = new Counter('kiln_serve_requests_total', 'HTTP requests by route, model and status code.')
  readonly inferRequests = new Counter('kiln_serve_infer_requests_total', 'Infer requests by model, version and status code.')
  readonly requestSeconds = new Histogram('kiln_serve_request_duration_seconds', 'Infer request latency, from the first byte read to the last byte written.', LATENCY_BUCKETS)
  readonly inferenceSeconds = new Histogram('kiln_serve_inference_duration_seconds', 'Time inside onnxruntime session.run per request.', LATENCY_BUCKETS)
  readonly queueSeconds = new Histogram('kiln_serve_queue_wait_seconds', 'Time a request waited for a free inference worker.', LATENCY_BUCKETS)
  private readonly gauges: Gauge[] = []

  gauge(name: string, help: string, read: () => Array<{labels?: Labels; value: number}>): void {
    this.gauges.push(new Gauge(name, help, read))
  }

  render(): string {
    const all: Metric[] = [this.requests, this.inferRequests, this.requestSeconds, this.inferenceSeconds, this.queueSeconds, ...this.gauges]
    return `${all.map((m) => m.render()).join('\n')}\n`
  }
}
