"""Workers: the studio's jobs on Ray Serve replicas (`python app.py --workers ray`), a `Backend`
(studio/serving/backend.py) that app.py picks at start.

The UI process keeps Gradio, the REST API and the dispatcher (its fair queue and lanes decide the
order); each replica holds its own in-process backend (`InProcess`: one model manager, loaded
once) and runs the same code as in-process. A job goes to Ray only when a replica is free, as
plain data (a generation or an upscale request), and comes back as a stream of events: progress,
previews and each finished picture, which the UI process saves at once with its metadata (plus a
`provenance` block: worker, host, queue wait). Stop and Skip travel through a small `Signals`
deployment that the replica polls. A replica that dies is replaced by Ray; its job runs again
once on another, unless pictures of it were already saved.

    replica.py   the Ray Serve deployments (imported only when Ray is used)
    backend.py   the Ray backend: start or join Ray, deploy, send jobs, read the streams
"""
