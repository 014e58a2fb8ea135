"""AUTOMATIC1111's REST API (/sdapi/v1): request bodies (schema.py), A1111 payloads to
GenerationRequests and results to A1111 answers (convert.py), the REST calls' progress, interrupt
and skip (calls.py), listings and options (catalog.py), and the routes (routes.py), which app.py
hands to Gradio's FastAPI app. Every generation is submitted to the dispatcher like a tab's."""
