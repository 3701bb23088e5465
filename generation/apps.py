from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "generation"

    def ready(self):
        from django.conf import settings
        from django.contrib.admin.models import LogEntry
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_save

        from generation.services.audit import staff_action
        from generation.services.credits import credits_grant

        def starting_grant(sender, instance, created, raw=False, **kwargs):
            # Every new account, however it was made (sign-up, createsuperuser, admin), starts here.
            if created and not raw and settings.SDWEB["STARTING_CREDITS"] > 0:
                credits_grant(user=instance, amount=settings.SDWEB["STARTING_CREDITS"], reason="starting grant")

        post_save.connect(starting_grant, sender=get_user_model(), weak=False, dispatch_uid="sdweb-starting-grant")

        def admin_change(sender, instance, created, raw=False, **kwargs):
            # Every add, change and delete staff make in the admin is a staff action too.
            if created and not raw:
                verb = {1: "add", 2: "change", 3: "delete"}.get(instance.action_flag, "edit")
                staff_action(staff=instance.user, action=f"{verb} {instance.content_type.model}",
                             target=instance.object_repr, details=instance.get_change_message())

        post_save.connect(admin_change, sender=LogEntry, weak=False, dispatch_uid="sdweb-admin-staff-action")


def finishing_process_start(inherited: dict) -> None:
    """A finishing process (services.finish): Django with its parent's settings (a test's temporary
    database and folders too), and no torch. It lives here because this module imports no model."""
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
