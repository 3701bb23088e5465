"""Jobs: a submission checked (validation, inputs, plot, styles), charged and audited (submit), queued
fairly and claimed (queue), run in batches on the GPU (worker, engine_setup) with its images
finished beside the denoiser (finish), and watched live (live, consumers). Imports go one way:

    submit -> queue -> live        worker -> finish -> queue -> live
"""
