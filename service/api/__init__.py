"""The HTTP API: one thin router per resource (openai, feedback, principles, conversations, jobs,
adapters, ops), the dependencies they share (deps), the request and response models (protocol),
errors in OpenAI's shape (errors) and the ASGI middleware."""
