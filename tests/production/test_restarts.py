"""Scenario 8 and the SIGTERM drain: the web process restarted and a worker restarted while a
job runs. The job page picks the job up again from the new web process and the job finishes;
the stopped worker finishes its job first and takes no new one; the next worker does."""

import json
import signal
import time

from tests.support import free_port, http_sign_up, job_socket, wait_until, web_answers

STATE = """
    from generation.jobs.models import Job
    print(json.dumps({{str(j.pk): [j.status, j.attempts, j.worker.split("@")[0], j.images.count(),
                                  j.credit_entries.count()] for j in Job.objects.filter(pk__in={ids})}}))
"""


def test_restarting_web_and_worker_mid_job_loses_nothing(any_broker):
    production = any_broker
    production.script("from generation.library.checkpoints import checkpoint_ensure_test_model\n"
                      "checkpoint_ensure_test_model()\nprint('{}')")
    port, log = free_port(), open(production.env["SDWEB_VAR_DIR"] + "/restarts.log", "a")
    base, processes = f"http://127.0.0.1:{port}", []
    production.base, production.port = base, port
    try:
        processes += [production.web(port, log), production.worker("gpu1", log)]
        wait_until(lambda: web_answers(base), timeout=60)
        user = http_sign_up(base, "restarts")
        form = {"prompt": "through restarts", "width": 512, "height": 512, "steps": 100, "guidance_scale": 7,
                "scheduler": "Euler a", "seed": 5, "num_images": 1, "checkpoint": "1"}
        long_job = user.post("/generate/", form)[0].split("job=")[1]
        next_job = user.post("/generate/", {**form, "steps": 2})[0].split("job=")[1]
        with job_socket(production, user, long_job) as ws:
            while json.loads(ws.recv(timeout=120)).get("type") != "progress":
                pass
        state = production.script(STATE.format(ids=[long_job, next_job]))
        assert state[long_job][0] == "running" and state[next_job][0] == "queued", state

        processes[1].send_signal(signal.SIGTERM)  # drain: finish the running job, take no new one
        processes[0].send_signal(signal.SIGTERM)  # the web process restarts meanwhile
        processes[0].wait(timeout=30)  # uvicorn shuts down gracefully, then re-raises SIGTERM
        processes.append(production.web(port, log))
        wait_until(lambda: web_answers(base), timeout=60)

        events = []  # what the job page's socket sees from the new web process
        with job_socket(production, user, long_job) as ws:
            while not events or events[-1].get("type") not in ("finished", "failed"):
                events.append(json.loads(ws.recv(timeout=120)))
                if events[-1].get("status") in ("succeeded", "failed"):
                    break
        assert events[-1].get("type") == "finished" or events[-1].get("status") == "succeeded", events[-3:]
        steps = [e["step"] for e in events if e.get("type") == "progress"]
        assert steps == sorted(steps), steps
        assert "through restarts" in user.get(f"/generate/?job={long_job}")[1]

        assert processes[1].wait(timeout=120) == 0  # the drained worker left after its job
        state = production.script(STATE.format(ids=[long_job, next_job]))
        assert state[long_job] == ["succeeded", 1, "gpu1", 1, 1], state
        assert state[next_job][:2] == ["queued", 0], state  # not taken by the worker that was stopping

        processes.append(production.worker("gpu2", log))
        deadline = time.monotonic() + 120
        while production.query("SELECT status FROM generation_job WHERE id = %s", next_job) != [("succeeded",)]:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        state = production.script(STATE.format(ids=[next_job]))
        assert state[next_job] == ["succeeded", 1, "gpu2", 1, 1], state
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            process.wait(timeout=60)
        log.close()
