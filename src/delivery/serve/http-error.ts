/**
 * A request the server refuses, with the HTTP status to answer and the message a client sees as
 * `{"error": ...}`. Thrown anywhere below the router; never a process-level failure.
 */
export class HttpError extends Error {
  readonly status: number
  readonly headers: Record<string, string>

  constructor(status: number, message: string, headers: Record<string, string> = {}) {
    super(message)
    this.name = 'HttpError'
    this.status = status
    this.headers = headers
  }
}

export function badRequest(message: string): HttpError {
  return new HttpError(400, message)
}
