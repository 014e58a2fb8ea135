"""The AUTOMATIC1111-compatible REST API (/sdapi/v1/...): routes that translate A1111 payloads
into GenerationRequests and submit them to the dispatcher. Not built yet: issue 20."""
