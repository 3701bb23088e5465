from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "generation"

    def ready(self):
        from django.conf import settings
        from django.contrib.admin.models import LogEntry
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_save

        from generation.accounts.models import StaffEvent
        from generation.accounts.staff import staff_action
        from generation.credits.ledger import credits_grant

        def starting_grant(sender, instance, created, raw=False, **kwargs):
            # Every new account, however it was made (sign-up, createsuperuser, admin), starts here.
            if created and not raw and settings.SDWEB["STARTING_CREDITS"] > 0:
                credits_grant(user=instance, amount=settings.SDWEB["STARTING_CREDITS"], reason="starting grant")

        post_save.connect(starting_grant, sender=get_user_model(), weak=False, dispatch_uid="sdweb-starting-grant")

        def admin_change(sender, instance, created, raw=False, **kwargs):
            # Every add, change and delete staff make in the admin is a staff action too.
            if created and not raw:
                event = {1: StaffEvent.ADMIN_ADD, 3: StaffEvent.ADMIN_DELETE}.get(instance.action_flag, StaffEvent.ADMIN_CHANGE)
                staff_action(staff=instance.user, event=event, target=f"{instance.content_type.model} {instance.object_repr}",
                             details=instance.get_change_message())

        post_save.connect(admin_change, sender=LogEntry, weak=False, dispatch_uid="sdweb-admin-staff-action")
