// An ES module handler (.mjs).
let counter = 0;
export const handler = async (event, context) => {
  counter += 1;
  return { kind: 'esm', counter, request_id: context.awsRequestId, name: event.name ?? 'world' };
};
