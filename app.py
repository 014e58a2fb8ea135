"""Start the studio: parse flags, build the Studio (one ModelManager), build the UI, launch.

    python app.py [--model FILE_FOLDER_OR_HUB_ID] [--models-dir models] [--host 127.0.0.1]
                  [--port 7860] [--share] [--auth user:password ...] [--auth-file FILE]
                  [--device auto|cuda|mps|cpu] [--dtype auto|fp16|bf16|fp32]
                  [--memory auto|none|low|fp8|cpu-text|...] [--allow-pickle]
                  [--prediction-type epsilon|v_prediction] [--outputs DIR] [--no-api]
                  [--workers local|ray] [--replicas N] [--ray-address ADDR]

The UI is at /, AUTOMATIC1111's REST API at /sdapi/v1 (documented at /docs), on the same port.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

# No network at run time unless the user asks: Gradio's usage analytics and hub telemetry off.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

SHARE_WARNING = """
################################################################################
#  WARNING: --share without --auth. Anyone who has the public link can use     #
#  this studio, its REST API (/sdapi/v1) and this machine's GPU.                #
#  Add --auth user:password to protect both (the API then takes HTTP Basic).    #
################################################################################
"""


def main(argv: list[str] | None = None) -> int:
    from studio.config import settings_from_args
    from studio.errors import StudioError
    from studio.prompts.presets import PresetError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes
    settings = settings_from_args(argv)

    from starlette.middleware import Middleware

    from studio.api.routes import api_routes
    from studio.finetune.jobs import TrainingJobs
    from studio.serving.studio import Studio
    from studio.ui import build_ui
    from studio.ui.files import OutputsGuard

    try:
        studio = Studio.from_settings(settings, backend=backend_for(settings))
        info = studio.model_info()
    except PresetError as exc:
        print(f"Presets are invalid: {exc}", file=sys.stderr)
        return 2
    except StudioError as exc:
        print(f"Cannot start: {exc}" if settings.workers != "local" else f"Cannot use the model: {exc}",
              file=sys.stderr)
        return 2
    print(f"Model: {info.name} ({info.family}, {info.native_size}px){' - ' + info.notice if info.notice else ''}")
    stale = studio.remove_stale_outputs()
    if stale:
        print(f"Removed {stale} unfinished temporary file(s) from {settings.outputs} (an earlier crash)")

    if settings.share and not settings.auth:
        print(SHARE_WARNING, file=sys.stderr)
    if studio.safety_on() or settings.share:
        print(studio.safety_status().capitalize())
    demo = build_ui(studio, TrainingJobs.from_settings(settings))
    demo.queue(default_concurrency_limit=1, max_size=settings.queue_size)
    # The REST routes are made part of Gradio's app when it is created: they come before its routes.
    routes = api_routes(studio, settings.auth) if settings.api else []
    if routes:
        print(f"REST API (AUTOMATIC1111's /sdapi/v1) on http://{settings.host}:{settings.port}/sdapi/v1, "
              f"documented at /docs{'; HTTP Basic with the --auth logins' if settings.auth else ''}")
    studio.warm_up()
    studio.history.sync_in_background()      # new or removed pictures since the last run
    signal.signal(signal.SIGTERM, _stop)
    try:
        demo.launch(server_name=settings.host, server_port=settings.port, share=settings.share,
                    auth=settings.auth or None, allowed_paths=[str(settings.outputs.resolve())],
                    show_error=True, footer_links=["api", "settings"], max_file_size=settings.limits.max_body_bytes,
                    app_kwargs={"routes": routes, "middleware": [
                        Middleware(OutputsGuard, root=settings.outputs, spaces=bool(settings.auth))]})
    except KeyboardInterrupt:
        pass
    return 0


def backend_for(settings):
    """What runs the jobs: None (in this process), or the Ray workers (--workers ray)."""
    if settings.workers == "ray":
        from studio.workers.backend import ray_workers
        return ray_workers()
    return None


def _stop(signum, frame) -> None:
    """SIGTERM (`kill`, a service manager's stop) ends the studio as Ctrl-C does, so what is
    registered to run at exit runs: the studio's workers leave a Ray cluster it joined."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
