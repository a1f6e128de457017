// Top-level await: node 20 loads this only asynchronously.
await Promise.resolve();
export const handler = async () => ({});
