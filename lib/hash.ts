/**
 * FNV-1a, 32-bit: a fast, stable string hash for spreading charms across an
 * interval. Not for security. (Written here: WebCrypto digests are async and
 * far heavier than a per-charm offset needs.)
 *
 * @module
 */

/** The 32-bit FNV-1a hash of `text`'s UTF-16 code units. */
export function fnv1a32(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}
