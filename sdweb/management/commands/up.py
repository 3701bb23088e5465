"""python manage.py up: the whole studio in one process, with no services to install.

An ASGI server (uvicorn) for pages and websockets and the in-memory channel layer in this process,
a Celery worker in a process of its own (sdweb.embedded), SQLite: the same tasks, consumers and
services as production.
"""

import asyncio

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from generation.jobs import live
from generation.jobs.queue import enqueue_job, jobs_recover_orphans
from generation.library.addons import addons_scan
from generation.library.checkpoints import checkpoint_ensure_test_model, checkpoints_scan
from sdweb.embedded import WorkerProcess
from sdweb.management.commands.add_model import hash_progress


class Command(BaseCommand):
    help = ("Start the studio on http://127.0.0.1:8000 (web and websockets, and a GPU/CPU worker in a process of its own); "
            "files copied into the models folders are registered first.")

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def _scan(self) -> None:
        """Register what was copied into the models folders since the last start, as A1111 lists its
        folders at start: only new or changed files are hashed, with a progress bar."""
        progress = {"progress_for": lambda path: hash_progress(path, self.stderr)}
        (checkpoints, skipped), (addons, skipped_addons) = checkpoints_scan(**progress), addons_scan(**progress)
        skipped |= skipped_addons
        self.stdout.write(f"Models folders: {len(checkpoints)} checkpoint(s) and VAE(s), {len(addons)} add-on(s)"
                          + (f"; {len(skipped)} file(s) skipped ('python manage.py scan_models' says why)"
                             if skipped else ""))

    def handle(self, host, port, **options):
        import uvicorn

        settings.MEDIA_ROOT.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        checkpoint = checkpoint_ensure_test_model()
        self._scan()
        if host not in ("127.0.0.1", "localhost", "::1"):
            self.stderr.write(self.style.WARNING(
                f"Listening on {host}: the studio is reachable from the network. "
                "Set SECRET_KEY and SDWEB_ALLOWED_HOSTS to the names people use to reach it."))
            if host not in ("0.0.0.0", "::"):
                settings.ALLOWED_HOSTS.append(host)
        waiting = jobs_recover_orphans()
        worker = WorkerProcess(settings.VAR_DIR / "broker")
        worker.start()
        for _ in range(waiting):
            enqueue_job()

        shown = "localhost" if host in ("0.0.0.0", "::") else host
        self.stdout.write(f"\nsdweb is running at http://{shown}:{port}/  (Ctrl-C stops it)")
        if checkpoint.is_default and checkpoint.is_test_model:
            self.stdout.write("Model: the built-in test model (images are noise); add a real one with "
                              "'python manage.py add_model NAME FILE.safetensors --default' (or a diffusers folder).")
        self.stdout.write("Make an admin account with 'python manage.py createsuperuser'.")
        if waiting:
            self.stdout.write(f"{waiting} job(s) left from the last run are queued again.")

        async def serve():
            live.use_event_loop(asyncio.get_running_loop())
            config = uvicorn.Config("sdweb.asgi:application", host=host, port=port, log_level="warning",
                                    lifespan="off", ws="websockets-sansio", timeout_graceful_shutdown=2,
                                    proxy_headers=False)  # sdweb.shared.throttle.client_ip decides, from SDWEB_TRUSTED_PROXIES
            await uvicorn.Server(config).serve()

        try:
            asyncio.run(serve())
        except KeyboardInterrupt:
            pass  # uvicorn hands Ctrl-C back once it has shut down cleanly
        finally:
            live.use_event_loop(None)
            worker.stop()
            self.stdout.write("Stopped. Unfinished jobs resume at the next start.")

