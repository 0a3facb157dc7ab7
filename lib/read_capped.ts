/**
 * Reading a body stream up to a byte limit, without holding more than the
 * limit: request bodies (`http/body_limit.ts`) and webhook replies
 * (`recipes/webhook.ts`).
 *
 * @module
 */

/**
 * Reads `stream` to the end into one array, or returns `null` (and cancels
 * the stream) as soon as it is longer than `maxBytes`.
 *
 * @param signal when it aborts, the stream is cancelled and the read
 *   rejects with its reason (a sender too slow to wait for, say)
 */
export async function readCapped(
  stream: ReadableStream<Uint8Array>,
  maxBytes: number,
  signal?: AbortSignal,
): Promise<Uint8Array<ArrayBuffer> | null> {
  const reader = stream.getReader();
  const abort = () => void reader.cancel(signal?.reason).catch(() => {});
  if (signal?.aborted) {
    abort();
    throw signal.reason;
  }
  signal?.addEventListener("abort", abort, { once: true });
  try {
    return await _read(reader, maxBytes, signal);
  } finally {
    signal?.removeEventListener("abort", abort);
  }
}

async function _read(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  maxBytes: number,
  signal: AbortSignal | undefined,
): Promise<Uint8Array<ArrayBuffer> | null> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (true) {
    const { done, value } = await reader.read();
    // A cancelled read ends as if done: say why instead.
    signal?.throwIfAborted();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      return null;
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return bytes;
}
