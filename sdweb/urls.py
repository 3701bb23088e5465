from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from gallery import api as gallery_api
from gallery import views as gallery_views
from generation import api
from generation import views as generation_views
from generation.compat import a1111, openai
from sdweb import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", generation_views.metrics, name="metrics"),
    path("staff/dashboard/", generation_views.dashboard, name="dashboard"),
    path("generate/", generation_views.generate, name="generate"),
    path("jobs/<uuid:job_id>/", generation_views.job_detail, name="job"),
    path("jobs/<uuid:job_id>/cancel/", generation_views.job_cancel, name="job-cancel"),
    path("jobs/<uuid:job_id>/keep/", gallery_views.job_keep, name="job-keep"),
    path("gallery/", gallery_views.gallery, name="gallery"),
    path("explore/", gallery_views.explore, name="explore"),
    path("s/<str:slug>/", gallery_views.share, name="share"),
    path("s/<str:slug>/report/", gallery_views.share_report, name="share-report"),
    path("images/<str:hex_id>.png", gallery_views.image_file, name="image-file"),
    path("images/<str:hex_id>.webp", gallery_views.image_thumbnail, name="image-thumbnail"),
    path("images/<str:hex_id>/", gallery_views.image_page, name="image"),
    path("images/<str:hex_id>/visibility/", gallery_views.image_visibility, name="image-visibility"),
    path("images/<str:hex_id>/delete/", gallery_views.image_delete, name="image-delete"),
    path("images/<str:hex_id>/variants/", gallery_views.image_variants, name="image-variants"),
    path("account/", views.account, name="account"),
    path("account/delete/", gallery_views.account_delete, name="account-delete"),
    path("account/export.zip", gallery_views.account_export, name="account-export"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/signup/<str:code>/", views.signup, name="signup-invite"),
    path("accounts/password_change/", views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password_reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("account/api-keys/", views.api_key_create, name="api-key-create"),
    path("account/api-keys/<int:key_id>/revoke/", views.api_key_revoke, name="api-key-revoke"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/jobs/", api.JobList.as_view()),
    path("api/v1/jobs/<uuid:pk>/", api.JobDetail.as_view()),
    path("api/v1/jobs/<uuid:pk>/cancel/", api.JobCancel.as_view()),
    path("api/v1/images/", gallery_api.ImageList.as_view()),
    path("api/v1/images/<str:hex_id>/", gallery_api.ImageDetail.as_view()),
    path("api/v1/images/<str:hex_id>/download/", gallery_api.ImageDownload.as_view(), name="api-image-download"),
    path("api/v1/checkpoints/", api.CheckpointList.as_view()),
    path("api/v1/vaes/", api.VaeList.as_view()),
    path("api/v1/schedulers/", api.SchedulerList.as_view()),
    path("api/v1/credits/", api.Credits.as_view()),
    path("api/v1/credits/ledger/", api.CreditLedger.as_view()),
    path("api/v1/quote/", api.Quote.as_view()),
    path("api/v1/trace", api.Trace.as_view()),
    path("sdapi/v1/txt2img", a1111.Txt2Img.as_view()),
    path("sdapi/v1/progress", a1111.Progress.as_view()),
    path("sdapi/v1/interrupt", a1111.Interrupt.as_view()),
    path("sdapi/v1/sd-models", a1111.SdModels.as_view()),
    path("sdapi/v1/samplers", a1111.Samplers.as_view()),
    path("sdapi/v1/schedulers", a1111.Schedulers.as_view()),
    path("sdapi/v1/options", a1111.Options.as_view()),
    path("sdapi/v1/embeddings", a1111.Embeddings.as_view()),
    path("sdapi/v1/sd-vae", a1111.SdVae.as_view()),
    *[path(f"sdapi/v1/{name}", a1111.EmptyList.as_view()) for name in a1111.EMPTY_LISTS],
    path("v1/images/generations", openai.images_generations, name="openai-generations"),
    path("v1/files/<str:token>", openai.signed_file, name="openai-file"),
]
