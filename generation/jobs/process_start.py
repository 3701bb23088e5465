"""The start of a finishing process (jobs.finish). It imports no model: it runs before Django is set up."""


def finishing_process_start(inherited: dict) -> None:
    """A finishing process (jobs.finish): Django with its parent's settings (a test's temporary
    database and folders too), and no torch."""
    import os
    import threading
    import time

    # One thread each for numpy's BLAS and OpenCV: several processes each using every core would
    # starve the denoiser beside them.
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENCV_FOR_THREADS_NUM="1")
    parent = os.getppid()

    def leave_with_parent():  # a parent killed outright (SIGKILL, out of memory) can't shut its pool down
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=leave_with_parent, name="leave-with-parent", daemon=True).start()
    import django
    from django.conf import settings

    for name, value in inherited.items():  # before setup: nothing may have read them yet
        setattr(settings, name, value)
    django.setup()
