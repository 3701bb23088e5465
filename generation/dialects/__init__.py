"""Other servers' APIs over the studio's own services: AUTOMATIC1111 (/sdapi/v1, with its
ControlNet extension's shapes) and OpenAI (/v1/images)."""
