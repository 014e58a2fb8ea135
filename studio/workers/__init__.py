"""Workers: the studio's generations on Ray Serve replicas (`python app.py --workers ray`).

The UI process keeps Gradio, the REST API and the dispatcher (its fair queue and lanes decide the
order); each replica holds its own Studio (one model manager, loaded once) and runs
`Studio.run`, the same code as in-process. A job goes to Ray only when a replica is free, as
plain data (the GenerationRequest), and comes back as a stream of events: progress, previews and
each finished picture, which the UI process saves at once with its metadata (plus a `provenance`
block: worker, host, queue wait). Stop and Skip travel through a small `Signals` deployment that
the replica polls. A replica that dies is replaced by Ray; its job runs again once on another,
unless pictures of it were already saved.

    replica.py   the Ray Serve deployments (imported only when Ray is used)
    backend.py   the dispatcher's backend: start or join Ray, deploy, send jobs, read the streams
"""
