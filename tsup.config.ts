import { defineConfig } from 'tsup'

export default defineConfig({
  entry: ['lib/index.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  target: 'node20',
  // No source maps. The output is unminified and keeps the source's names and structure, so a stack
  // trace into dist/ reads well as it is. Maps with their sources inlined were 58% of the tarball;
  // maps without them point at lib/*.ts, which is not shipped, and make debuggers and bundlers
  // (Vite, webpack's source-map-loader) complain about missing sources.
  sourcemap: false,
})
