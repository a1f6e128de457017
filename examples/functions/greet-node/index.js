// The `greet` example: a Lambda-style Node.js handler (CommonJS).
//
// Any AWS Lambda Node.js handler runs unmodified: `handler(event, context)`
// gets the parsed JSON payload and a context object and returns (or
// resolves to) a JSON-serialisable value. Code at module level runs once,
// in the zygote; every invocation gets a fresh copy of what it built.
'use strict';

const greetings = { en: 'hello', fr: 'bonjour', de: 'hallo' };

exports.handler = async (event, context) => {
  const name = (event && event.name) || 'world';
  const greeting = greetings[(event && event.lang) || 'en'] || greetings.en;
  return {
    message: `${greeting}, ${name}`,
    function: context.functionName,
    request_id: context.awsRequestId,
    memory_limit_mb: Number(context.memoryLimitInMB),
    remaining_ms: context.getRemainingTimeInMillis(),
  };
};
