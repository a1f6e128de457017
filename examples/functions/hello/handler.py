"""The default `hello` function: a Lambda-style Python handler.

Any AWS Lambda Python handler runs unmodified: `handler(event, context)` gets
the parsed JSON payload and a context object, and returns a JSON-serialisable
value.
"""


def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    return {
        "message": f"hello, {name}",
        "function": context.function_name,
        "request_id": context.aws_request_id,
        "memory_limit_mb": context.memory_limit_in_mb,
    }
