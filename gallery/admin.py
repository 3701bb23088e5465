from django.contrib import admin

from gallery.models import Image


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("__str__", "owner", "job", "seed", "is_public", "created_at")
    list_filter = ("is_public",)
    readonly_fields = ("id", "owner", "job", "index", "seed", "png", "thumbnail", "width", "height", "created_at")
