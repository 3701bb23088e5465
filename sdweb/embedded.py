"""The embedded studio's worker (`manage.py up`): the Celery worker production runs, in a process of
its own, so torch's threads never starve the web's. Two processes share no memory: Celery's
messages go through a folder (kombu's filesystem transport), and the worker's job events come back
through a queue to the web process, which sends them on its in-memory channel layer. Tests run the
same worker as a thread of their own process (start_worker_thread). No model is imported at the top:
a spawned worker process imports this module before Django is set up."""

import logging
import multiprocessing
import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps

log = logging.getLogger(__name__)
PROCESS_NAME = "sdweb-worker"


class FolderChannel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        # kombu's own writes the file in place, so the reader may take it half-written (an empty
        # file, a JSONDecodeError that stops the worker); written aside and renamed, it appears whole.
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        aside = os.path.join(self.data_folder_out, "incoming", name)
        with open(aside, "w") as file:
            file.write(dumps(payload))
        os.replace(aside, os.path.join(self.data_folder_out, name))


class FolderTransport(filesystem.Transport):
    Channel = FolderChannel


TRANSPORT_ALIASES["sdwebfolder"] = "sdweb.embedded:FolderTransport"


def use_folder_broker(folder: Path) -> None:
    """Celery's messages as files in `folder`, polled every 10 ms (the in-memory broker is per process)."""
    from sdweb.celery import app

    app.conf.broker_url = "sdwebfolder://"
    app.conf.broker_transport_options = {"data_folder_in": str(folder), "data_folder_out": str(folder),
                                         "control_folder": str(folder / "control"), "polling_interval": 0.01}


class WorkerProcess:
    """The web process's handle on its worker: starts it, relays its job events, starts another
    if it dies (a segfault, the kernel's OOM killer: its running jobs go back to the queue, charged
    once), stops it."""

    def __init__(self, folder: Path):
        shutil.rmtree(folder, ignore_errors=True)  # a stopped run's messages: its jobs are queued again at start
        (folder / "control").mkdir(parents=True)
        (folder / "incoming").mkdir()
        use_folder_broker(folder)
        self.folder, self.spawn, self.stopping = folder, multiprocessing.get_context("spawn"), threading.Event()
        self.events = self.spawn.Queue()  # put() never blocks the denoising thread: a feeder thread writes

    def start(self) -> None:
        self._start_process()
        threading.Thread(target=self._relay, name="worker-events", daemon=True).start()
        threading.Thread(target=self._watch, name="worker-watch", daemon=True).start()

    def _start_process(self) -> None:
        self.control, theirs = self.spawn.Pipe()
        self.process = self.spawn.Process(target=worker_process_main, args=(self.folder, theirs, self.events),
                                          name=PROCESS_NAME)
        self.process.start()

    def _watch(self) -> None:
        from generation.jobs.queue import enqueue_job, jobs_recover_orphans

        while not self.stopping.is_set():
            self.process.join(timeout=1)
            if self.process.is_alive() or self.stopping.is_set():
                continue
            log.error("The worker process stopped (exit code %s); starting another.", self.process.exitcode)
            waiting = jobs_recover_orphans()  # it was the only worker: every running job was its
            self._start_process()
            for _ in range(waiting):
                enqueue_job()

    def _relay(self) -> None:
        from generation.jobs import live

        while (item := self.events.get()) is not None:
            try:
                live.job_event(*item)
            except Exception:
                log.exception("an event of job %s was not sent", item[0])

    def stop(self, timeout: float = 60) -> None:
        """The worker sends its running jobs back to the queue, finishes what it made, and ends."""
        self.stopping.set()
        try:
            self.control.send("stop")
        except OSError:
            pass  # it is gone already
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.events.put(None)


def worker_process_main(folder: Path, control, events) -> None:
    # Ctrl-C reaches every process of the terminal's group: the web process decides when this one stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import django

    django.setup()
    from generation.jobs import live

    use_folder_broker(folder)
    live.relay_to(events)
    worker = start_worker_thread()
    while not control.poll(1):
        if not any(thread.name == "celery-worker" for thread in threading.enumerate()):
            raise SystemExit("the Celery worker stopped")  # the web process starts another worker process
    try:
        control.recv()
    except EOFError:
        pass  # the web process died: stop as if told to
    stop_worker(worker)


def start_worker_thread():
    """The Celery worker, solo pool, on a thread of this process."""
    import warnings

    from sdweb.celery import app

    # Root is the usual user in a container; the worker here runs no code that others send.
    warnings.filterwarnings("ignore", message="You're running the worker with superuser privileges")
    worker = app.Worker(pool="solo", concurrency=1, loglevel="WARNING", quiet=True, without_heartbeat=True,
                        without_mingle=True, without_gossip=True, hostname="embedded@sdweb")

    def start():
        from generation.jobs.engine_setup import engine_warm_up  # SDWEB_COMPILE: compiled before the first job
        from generation.jobs.finish import FINISHER

        FINISHER.start()
        engine_warm_up()
        worker.start()

    threading.Thread(target=start, name="celery-worker", daemon=True).start()
    return worker


def stop_worker(worker, wait_seconds: float = 10) -> None:
    """A running job notices within one step, goes back to the queue, and the worker stops."""
    from generation.jobs.finish import FINISHER
    from generation.jobs.models import Job
    from generation.jobs.worker import SHUTTING_DOWN

    SHUTTING_DOWN.set()
    deadline = time.monotonic() + wait_seconds
    while Job.objects.filter(status=Job.RUNNING).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    worker.stop(in_sighandler=False)
    FINISHER.close(timeout=max(0.0, deadline - time.monotonic()))
