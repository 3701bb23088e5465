"""Every write of the generation domain, in modules that depend one way:

    audit  <-  credits  <-  queue  <-  submit
                              ^
                              +------  run  (claim, engine, store through gallery.services, publish)

`checkpoints` registers models. Nothing here imports views, URLs, templates, DRF or Channels:
reads that take more than a line are in `generation.selectors`, what pages, the API, the dialects
and the sockets show is in `generation.presenters`, and job events go out through `generation.live`.
This file imports nothing, so importing one module never drags in the others."""
