"""One settings module: every setting comes from the environment with a safe default.

Unset, sdweb runs embedded: SQLite, Celery with its worker in a process of its own (sdweb.embedded;
messages through a folder; tests run it as a thread on the in-memory broker), the in-memory channel
layer, media in a local folder, the built-in test model. The README lists
every variable.
"""

import os
from datetime import timedelta
from pathlib import Path

from sdweb.environment import database_from_url, embedded_secret_key, env, env_bool, env_choice, env_float, env_int, env_networks

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env("SDWEB_VAR_DIR", str(BASE_DIR / "var")))
DEBUG = env_bool("SDWEB_DEBUG", False)
PRODUCTION = env_choice("SDWEB_ENV", "", ("", "production")) == "production"
SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise RuntimeError("SECRET_KEY must be set when SDWEB_ENV=production")
    SECRET_KEY = embedded_secret_key(VAR_DIR / "secret_key")
ALLOWED_HOSTS = env("SDWEB_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in env("SDWEB_CSRF_TRUSTED_ORIGINS").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "sdweb",
    "generation",
    "gallery",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "sdweb.middleware.ContentSecurityPolicy",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "sdweb.middleware.OneRequestAnswers",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "sdweb.two_factor.StaffSecondFactor",
    "axes.middleware.AxesMiddleware",  # turns a lockout during sign-in into the 429 page
]
# django-axes checks every authenticate() (sign-in pages, the admin, HTTP Basic, password
# re-checks) before any password is hashed; sdweb.shared.throttle.StudioLockouts says when to lock.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
ROOT_URLCONF = "sdweb.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "sdweb.views.studio_context",
            ]
        },
    }
]
ASGI_APPLICATION = "sdweb.asgi.application"
DATABASES = {"default": database_from_url(env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'sdweb.sqlite3'}"))}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The web and the worker (threads or processes) share the file: wait for a lock rather than fail.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        # Password hashes live in it: readable by the studio's own user only (SQLite's journal
        # files take the database file's permissions).
        database_file = Path(DATABASES["default"]["NAME"])
        database_file.parent.mkdir(parents=True, exist_ok=True)
        database_file.touch(mode=0o600)
        database_file.chmod(0o600)
        # Write-ahead log: the web's reads and the worker process's writes don't wait for each other.
        DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env("SDWEB_MEDIA_ROOT", str(VAR_DIR / "media")))
STORAGES = {
    # Image files are never served from a public URL: views check permissions first.
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": None}},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if env("SDWEB_S3_BUCKET"):
    # S3-compatible storage (django-storages): private objects, read only through our views.
    STORAGES["default"] = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": env("SDWEB_S3_BUCKET"), "endpoint_url": env("SDWEB_S3_ENDPOINT_URL") or None,
        "region_name": env("SDWEB_S3_REGION") or None, "access_key": env("SDWEB_S3_ACCESS_KEY") or None,
        "secret_key": env("SDWEB_S3_SECRET_KEY") or None, "default_acl": "private", "querystring_auth": True,
        "file_overwrite": True, "location": env("SDWEB_S3_PREFIX", "sdweb"),
    }}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "generate"
LOGOUT_REDIRECT_URL = "home"
EMAIL_BACKEND = env("SDWEB_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
if env("SDWEB_SMTP_HOST"):
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST, EMAIL_PORT = env("SDWEB_SMTP_HOST"), env_int("SDWEB_SMTP_PORT", 587)
    EMAIL_HOST_USER, EMAIL_HOST_PASSWORD = env("SDWEB_SMTP_USER"), env("SDWEB_SMTP_PASSWORD")
    EMAIL_USE_TLS = env_bool("SDWEB_SMTP_TLS", True)
DEFAULT_FROM_EMAIL = env("SDWEB_FROM_EMAIL", "sdweb@localhost")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
if PRODUCTION:
    # TLS ends at the reverse proxy, which says so in X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SDWEB_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SDWEB_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SDWEB_HSTS_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SDWEB_HSTS_PRELOAD", True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP

REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    # redis-py 8 reads with a 5 s socket timeout by default, exactly channels_redis's 5 s blocking
    # pop: on a busy machine the reply comes a moment later and the socket dies. Read longer.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                  "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
                                             "capacity": 200}}}
    CACHES = {"default": {"BACKEND": "sdweb.shared.cache.ProcessRedisCache", "LOCATION": REDIS_URL}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Celery: the Job table is the queue of record; a message only says "a job is waiting".
# The broker: Redis by default in production; RabbitMQ (amqp://...) is supported too.
CELERY_BROKER_URL = env("SDWEB_BROKER_URL", "") or REDIS_URL or "memory://"
# A GPU worker runs one job at a time and must not hoard messages; a message comes back if the
# worker process dies (the claim and lease make a second delivery harmless).
JOB_TIMEOUT_SECONDS = env_int("SDWEB_JOB_TIMEOUT_SECONDS", 1800, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = JOB_TIMEOUT_SECONDS + 60
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 120
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {"visibility_timeout": 4 * CELERY_TASK_TIME_LIMIT} if CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
    else {"polling_interval": 0.01} if CELERY_BROKER_URL == "memory://" else {})
CELERY_IMPORTS = ("generation.tasks",)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A pool process that replaces a dead one imports torch and (SDWEB_COMPILE) compiles the UNet before
# it says it is up: 14 s of imports on a busy 2-core host. Celery's 4 s default killed it and the next,
# over and over, and the job never ran again.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = JOB_TIMEOUT_SECONDS
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_REDIRECT_STDOUTS = False
CELERY_BEAT_SCHEDULE = {"reap-jobs": {"task": "generation.reap_jobs",
                                      "schedule": env_float("SDWEB_REAP_EVERY_SECONDS", 60)}}

REST_FRAMEWORK = {
    "UNICODE_JSON": False,  # \u escapes: an error that echoes a lone surrogate still renders
    "DEFAULT_AUTHENTICATION_CLASSES": ["sdweb.shared.api_auth.ApiKeyAuthentication",
                                       "rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"user": env("SDWEB_API_RATE", "120/min")},
    "DEFAULT_PAGINATION_CLASS": "sdweb.shared.pagination.Pages",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["sdweb.shared.parsers.JSONParser", "rest_framework.parsers.FormParser",
                               "rest_framework.parsers.MultiPartParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "sdweb API",
    "DESCRIPTION": "Generate images with Stable Diffusion: jobs, images, checkpoints and credits.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # served by us: works offline and under our CSP
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# A worker's cores: its finishing processes first, torch's threads the rest. Oversubscribed, torch's
# threads wait on each other at every operation: on 2 cores with a finishing process and the web
# beside it, 2 torch threads kept a stand-in GPU 84 % busy at 32 users (p95 20 s), 1 thread 91 %
# (p95 5.8 s) (bench/throughput.py --standin-ms 25 --compare pipeline).
_CORES = len(os.sched_getaffinity(0))
_FINISH_PROCESSES = env_int("SDWEB_FINISH_PROCESSES", max(1, _CORES // 2), minimum=0)

# The studio's own settings (README: "Settings").
SDWEB = {
    "STARTING_CREDITS": env_int("SDWEB_STARTING_CREDITS", 100),
    "TOPUP_AMOUNT": env_int("SDWEB_TOPUP_AMOUNT", 0),
    "TOPUP_EVERY_HOURS": env_float("SDWEB_TOPUP_EVERY_HOURS", 24),
    "TOPUP_CEILING": env_int("SDWEB_TOPUP_CEILING", 100),
    # cost = ceil(images x width x height x steps / COST_UNIT), at least 1
    "COST_UNIT": env_int("SDWEB_COST_UNIT", 512 * 512 * 30),
    "MAX_IMAGES": env_int("SDWEB_MAX_IMAGES", 4, minimum=1),
    "PLOT_MAX_CELLS": env_int("SDWEB_PLOT_MAX_CELLS", 25, minimum=1),  # images of one X/Y/Z plot
    "MAX_SIDE": env_int("SDWEB_MAX_SIDE", 1536, minimum=256),  # SDXL's widest usual size is 1536x640
    "MAX_STEPS": env_int("SDWEB_MAX_STEPS", 150, minimum=1),  # never above 150 (the engine refuses more)
    # Starting images, masks and images to trace: bytes of one file, and pixels checked before decoding
    "UPLOAD_MAX_BYTES": env_int("SDWEB_UPLOAD_MAX_BYTES", 20 * 2**20, minimum=2**20),
    "UPLOAD_MAX_PIXELS": env_int("SDWEB_UPLOAD_MAX_PIXELS", 4096 * 4096, minimum=256 * 256),
    "UPSCALE_MAX_SIDE": env_int("SDWEB_UPSCALE_MAX_SIDE", 4096, minimum=512),  # an upscaled image's longest side
    "ACTIVE_JOB_CAP": env_int("SDWEB_ACTIVE_JOB_CAP", 10),
    "ATTEMPT_LIMIT": env_int("SDWEB_ATTEMPT_LIMIT", 3),
    "LEASE_SECONDS": env_int("SDWEB_LEASE_SECONDS", 120),
    "JOB_TIMEOUT_SECONDS": JOB_TIMEOUT_SECONDS,
    "SIGNED_URL_SECONDS": env_int("SDWEB_SIGNED_URL_SECONDS", 3600),
    "FAIR_WINDOW_MINUTES": env_int("SDWEB_FAIR_WINDOW_MINUTES", 60),
    "REGISTRATION": env_choice("SDWEB_REGISTRATION", "open", ("open", "invite", "closed")),
    # Signing in with the organisation's accounts (sdweb.oidc): the provider's issuer URL, its name on
    # the sign-in page, the claim listing someone's groups, and whether anyone it knows gets an account.
    "OIDC_ISSUER": env("SDWEB_OIDC_ISSUER").rstrip("/"),
    "OIDC_NAME": env("SDWEB_OIDC_NAME", "your organisation"),
    "OIDC_GROUPS_CLAIM": env("SDWEB_OIDC_GROUPS_CLAIM", "groups"),
    "OIDC_NEW_ACCOUNTS": env_choice("SDWEB_OIDC_NEW_ACCOUNTS", "open", ("open", "invited")),
    "LOCAL_PASSWORDS": env_bool("SDWEB_LOCAL_PASSWORDS", True),
    "STAFF_TWO_FACTOR": env_bool("SDWEB_STAFF_TWO_FACTOR", False),  # staff pages need a second factor (TOTP)
    "AUTH_ATTEMPTS_PER_IP": env_int("SDWEB_AUTH_ATTEMPTS_PER_IP", 20),
    "AUTH_FAILURES_PER_ACCOUNT": env_int("SDWEB_AUTH_FAILURES_PER_ACCOUNT", 5),
    "AUTH_WINDOW_SECONDS": env_int("SDWEB_AUTH_WINDOW_SECONDS", 900, minimum=1),
    "RESETS_PER_WINDOW": env_int("SDWEB_RESETS_PER_WINDOW", 3, minimum=1),  # password-reset mails per address and per IP
    "REPORTS_PER_WINDOW": env_int("SDWEB_REPORTS_PER_WINDOW", 10, minimum=1),  # image reports per client IP
    "VERIFY_PER_WINDOW": env_int("SDWEB_VERIFY_PER_WINDOW", 30, minimum=1),  # public verifications per client IP
    # Proxies whose X-Forwarded-For is believed (addresses or networks); empty: none, REMOTE_ADDR is the client.
    "TRUSTED_PROXIES": env_networks("SDWEB_TRUSTED_PROXIES"),
    "MODELS_DIR": Path(env("SDWEB_MODELS_DIR", str(VAR_DIR / "models"))),
    # Add-on folders, as A1111 lays them out (scan_models registers what is in them)
    "LORA_DIR": Path(env("SDWEB_LORA_DIR", str(VAR_DIR / "models" / "Lora"))),
    "EMBEDDINGS_DIR": Path(env("SDWEB_EMBEDDINGS_DIR", str(VAR_DIR / "models" / "embeddings"))),
    "CONTROLNET_DIR": Path(env("SDWEB_CONTROLNET_DIR", str(VAR_DIR / "models" / "ControlNet"))),
    "ESRGAN_DIR": Path(env("SDWEB_ESRGAN_DIR", str(VAR_DIR / "models" / "ESRGAN"))),
    # What FLUX.1 transformer files lack, as ComfyUI lays it out: clip_l, t5xxl_fp16 (or _fp8), t5_tokenizer/
    "TEXT_ENCODERS_DIR": Path(env("SDWEB_TEXT_ENCODERS_DIR", str(VAR_DIR / "models" / "text_encoders"))),
    # A user's own LoRAs and embeddings: bytes of one file, and of all of them together
    "ADDON_MAX_BYTES": env_int("SDWEB_ADDON_MAX_BYTES", 1024 * 2**20, minimum=2**20),
    "ADDON_QUOTA_BYTES": env_int("SDWEB_ADDON_QUOTA_BYTES", 2 * 1024 * 2**20, minimum=0),
    # Each user's gallery and uploaded add-ons together, in MB (roles may set their own); 0: no limit.
    "STORAGE_QUOTA_MB": env_int("SDWEB_STORAGE_QUOTA_MB", 0, minimum=0),
    "CONTROLNET_MAX_UNITS": env_int("SDWEB_CONTROLNET_MAX_UNITS", 3, minimum=0),
    "AUDIT_RETENTION_DAYS": env_int("SDWEB_AUDIT_RETENTION_DAYS", 365),  # prune_audit keeps at least this
    # Prompt filter rules beside the admin's: words or phrases, "re:" before a regular expression; "|" between
    "BLOCKLIST": [rule.strip() for rule in env("SDWEB_BLOCKLIST", "").split("|") if rule.strip()],
    "METRICS_TOKEN": env("SDWEB_METRICS_TOKEN", ""),  # /metrics wants "Authorization: Bearer <token>"...
    "METRICS_ALLOW": [ip for ip in env("SDWEB_METRICS_ALLOW", "").split(",") if ip],  # ...or a caller from here
    "WORKER_METRICS_PORT": env_int("SDWEB_WORKER_METRICS_PORT", 0),  # 0: workers expose no metrics port
    # C2PA content credentials: "local" signs with a certificate made in the var folder (untrusted),
    # "off" signs nothing; SDWEB_C2PA_CERT + SDWEB_C2PA_KEY (PEM files) sign with the operator's own.
    "C2PA": env_choice("SDWEB_C2PA", "local", ("local", "off")),
    "C2PA_CERT": env("SDWEB_C2PA_CERT", ""),
    "C2PA_KEY": env("SDWEB_C2PA_KEY", ""),
    "C2PA_TSA_URL": env("SDWEB_C2PA_TSA_URL", ""),
    # The engine's settings; workers hand them to it as arguments (generation.jobs.worker).
    "DEVICE": env("SDWEB_DEVICE", ""),  # "" = CUDA when present, else the CPU
    # torch's CPU threads per worker process: the cores its finishing processes leave (two busy
    # processes each using every core ran a job 10x slower than one thread each)
    "TORCH_THREADS": env_int("SDWEB_TORCH_THREADS", max(1, _CORES - _FINISH_PROCESSES), minimum=1),
    "DTYPE": env_choice("SDWEB_DTYPE", "", ("", "float16", "bfloat16", "float32")),  # "" = by device
    "PIPELINE_CACHE_BYTES": env_int("SDWEB_PIPELINE_CACHE_BYTES", 8 * 2**30),
    # FLUX.1, SD 3.5, Z-Image in less memory: the transformer's weights in float8 ("fp8"), int8 ("int8") or NF4,
    # T5 (Z-Image: Qwen3) kept on the CPU ("cpu"), or there between runs and on the GPU for their prompts ("offload")
    "QUANTIZE": env_choice("SDWEB_QUANTIZE", "none", ("none", "fp8", "int8", "nf4")),
    "T5_DEVICE": env_choice("SDWEB_T5_DEVICE", "", ("", "cpu", "offload")),
    # Cross-user batching: images of compatible jobs denoised together (0 = 8 on a GPU, 1 on the CPU),
    # and how long a worker waits for a fresh job's company before it starts
    "BATCH_MAX": env_int("SDWEB_BATCH_MAX", 0, minimum=0),
    "BATCH_WAIT_MS": env_int("SDWEB_BATCH_WAIT_MS", 30, minimum=0),
    # Processes that finish images beside the denoiser (watermark, PNG, C2PA, storage, publish);
    # 0 finishes them on the worker's own thread, between runs
    "FINISH_PROCESSES": _FINISH_PROCESSES,
    # How often a running batch writes its jobs' progress and latest previews to their rows (one
    # query for the batch); pages get every preview over their socket at once
    "PROGRESS_SAVE_SECONDS": env_float("SDWEB_PROGRESS_SAVE_SECONDS", 1.0),
    # torch.compile the default checkpoint's UNet, warmed up at these sizes before the first job
    "COMPILE": env_choice("SDWEB_COMPILE", "0", ("0", "1")) == "1",
    "COMPILE_SIZES": [tuple(int(n) for n in size.split("x")) for size in env("SDWEB_COMPILE_SIZES", "512x512").split(",")],
    "PREVIEW_INTERVAL": env_float("SDWEB_PREVIEW_INTERVAL", 0.25),
    "PREVIEW_MAX_EDGE": env_int("SDWEB_PREVIEW_MAX_EDGE", 256, minimum=16),
    "PREVIEW_FORMAT": env_choice("SDWEB_PREVIEW_FORMAT", "JPEG", ("JPEG", "WEBP")),
    "TAESD": env("SDWEB_TAESD", ""),  # an AutoencoderTiny folder for truer previews
    "TAEF1": env("SDWEB_TAEF1", ""),  # the same for FLUX.1's latents
    "TAESD3": env("SDWEB_TAESD3", ""),  # ...and SD 3.5's
    "SAFETY_CHECKER": env("SDWEB_SAFETY_CHECKER", "off"),  # "off" or a StableDiffusionSafetyChecker folder
}
# A1111 clients send an image, a mask and each ControlNet unit's image as base64 in one JSON body.
DATA_UPLOAD_MAX_MEMORY_SIZE = (2 + SDWEB["CONTROLNET_MAX_UNITS"]) * (SDWEB["UPLOAD_MAX_BYTES"] * 4 // 3) + 2**20
if SDWEB["MAX_STEPS"] > 150:
    raise RuntimeError(f"SDWEB_MAX_STEPS must be at most 150 (got {SDWEB['MAX_STEPS']})")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_choice("SDWEB_LOG_LEVEL", "INFO",
                                                          ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))},
    "loggers": {"celery": {"level": "WARNING"}, "uvicorn.access": {"level": "WARNING"},
                "axes": {"level": "ERROR"}},  # a lockout is answered 429; its log lines would flood
}

AXES_HANDLER = "sdweb.shared.throttle.StudioLockouts"
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# An attempt is refused once the failures before it reach a limit (StudioLockouts.is_locked), and
# the refusal is the 429 page; failures during a lockout don't extend it.
AXES_LOCK_OUT_AT_FAILURE = False
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_COOLOFF_TIME = timedelta(seconds=SDWEB["AUTH_WINDOW_SECONDS"])
AXES_USERNAME_CALLABLE = "sdweb.shared.throttle.normalised_username"
AXES_CLIENT_IP_CALLABLE = "sdweb.shared.throttle.axes_client_ip"
AXES_LOCKOUT_CALLABLE = "sdweb.shared.throttle.lockout_response"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_ENABLE_ADMIN = False  # attempts live in the cache, so axes' database tables stay empty: don't show them
if SDWEB["OIDC_ISSUER"]:
    AUTHENTICATION_BACKENDS.append("sdweb.oidc.SignIn")
    OIDC_RP_CLIENT_ID, OIDC_RP_CLIENT_SECRET = env("SDWEB_OIDC_CLIENT_ID"), env("SDWEB_OIDC_CLIENT_SECRET")
    OIDC_RP_SIGN_ALGO = env_choice("SDWEB_OIDC_SIGN_ALGO", "RS256", ("RS256", "ES256", "HS256"))
    OIDC_RP_SCOPES = env("SDWEB_OIDC_SCOPES", "openid email profile")
    OIDC_USE_PKCE = True
    LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/"
if not SDWEB["LOCAL_PASSWORDS"]:  # no password signs anyone in: sign-up and resets close too
    if not SDWEB["OIDC_ISSUER"]:
        raise RuntimeError("SDWEB_LOCAL_PASSWORDS=false needs SDWEB_OIDC_ISSUER: no one could sign in")
    AUTHENTICATION_BACKENDS.remove("django.contrib.auth.backends.ModelBackend")
