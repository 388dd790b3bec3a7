/** Session payload sizes the store-level benchmark uses, in bytes of JSON. */
export const PAYLOAD_SIZES = [
  { label: '200 B', bytes: 200 },
  { label: '2 KB', bytes: 2_000 },
  { label: '50 KB', bytes: 50_000 },
] as const

export type PayloadSize = (typeof PAYLOAD_SIZES)[number]

/**
 * Plain session data as express-session stores it (a serialized cookie plus application fields),
 * padded with a cart of small objects until its JSON is about `bytes` long.
 */
export function sessionPayload(bytes: number): Record<string, unknown> {
  const sess: Record<string, unknown> = {
    cookie: { originalMaxAge: 86_400_000, expires: new Date(Date.now() + 86_400_000).toISOString(), httpOnly: true, path: '/' },
    user: { id: 4242, name: 'Ada' },
  }
  const cart: Array<{ sku: string; qty: number }> = []
  sess.cart = cart
  while (JSON.stringify(sess).length + 32 < bytes)
    cart.push({ sku: `SKU-${cart.length.toString(36).padStart(5, '0')}`, qty: 1 + (cart.length % 3) })
  return sess
}
