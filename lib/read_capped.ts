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
 */
export async function readCapped(
  stream: ReadableStream<Uint8Array>,
  maxBytes: number,
): Promise<Uint8Array<ArrayBuffer> | null> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = stream.getReader();
  while (true) {
    const { done, value } = await reader.read();
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
