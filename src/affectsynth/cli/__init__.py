"""Host-side edges: the typer command line (``app``) and the bulk jobs it runs.

    app       the ``affectsynth`` command: synth, demo, warm-up of the others
    bulk      grid, animate, augment commands
    models    model build / import / info / figure, evaluate
    guard     one-line errors and exit codes
    inputs    scanning inputs, safe names, size bucketing
    augment   run_augment: resumable augmentation with labels.csv
    targets   one photo under many targets; the V-A grid sheet
    sheets    contact sheets
    media     GIF / MP4 encoding

Importing this package (or ``inputs``, ``augment``, ``targets``, ``media``) does not import typer.
"""
