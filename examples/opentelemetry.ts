// Store operations as OpenTelemetry spans, from the store's tracing channel
// (node:diagnostics_channel). The store does not depend on OpenTelemetry: this subscriber does.
// Without an OpenTelemetry SDK registered, @opentelemetry/api's tracer is a no-op; with one, every
// get/set/touch/destroy and listing becomes a span with the session (shortened), server, hit and write.
import diagnosticsChannel from 'node:diagnostics_channel'
import { type Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'

/** What the store puts in each operation's context (see docs/observability.md). */
interface OperationContext {
  operation: string
  server: string
  session?: string
  hit?: boolean
  write?: string
  error?: unknown
}

export const CHANNEL = 'express-session-memcache:operation'

/** Subscribes to the store's channel; returns the function that unsubscribes. */
export function traceSessionStore(tracerName = 'express-session-memcache'): () => void {
  const tracer = trace.getTracer(tracerName)
  const spans = new WeakMap<OperationContext, Span>()
  const handlers = {
    start(context: OperationContext) {
      const span = tracer.startSpan(`session ${context.operation}`, {
        kind: SpanKind.CLIENT,
        attributes: { 'db.system': 'memcached', 'server.address': context.server, 'session.id.short': context.session ?? '' },
      })
      spans.set(context, span)
    },
    end() {},
    asyncStart() {},
    error(context: OperationContext) {
      const span = spans.get(context)
      span?.recordException(context.error as Error)
      span?.setStatus({ code: SpanStatusCode.ERROR, message: (context.error as Error)?.message })
    },
    asyncEnd(context: OperationContext) {
      const span = spans.get(context)
      if (context.hit !== undefined) span?.setAttribute('session.hit', context.hit)
      if (context.write !== undefined) span?.setAttribute('session.write', context.write)
      span?.end()
      spans.delete(context)
    },
  }
  const channel = diagnosticsChannel.tracingChannel(CHANNEL)
  channel.subscribe(handlers as never)
  return () => channel.unsubscribe(handlers as never)
}

/** Without OpenTelemetry: one latency line per operation. */
export function logSessionStoreLatency(log: (line: string) => void = console.log): () => void {
  const started = new WeakMap<object, number>()
  const handlers = {
    start: (context: OperationContext) => started.set(context, performance.now()),
    end() {},
    asyncStart() {},
    error() {},
    asyncEnd(context: OperationContext) {
      const ms = performance.now() - (started.get(context) ?? performance.now())
      const outcome = context.error ? `error ${(context.error as { code?: string }).code ?? ''}` : context.hit === false ? 'miss' : 'ok'
      log(`session ${context.operation} ${context.session ?? ''} on ${context.server}: ${outcome} in ${ms.toFixed(2)} ms`)
    },
  }
  const channel = diagnosticsChannel.tracingChannel(CHANNEL)
  channel.subscribe(handlers as never)
  return () => channel.unsubscribe(handlers as never)
}
