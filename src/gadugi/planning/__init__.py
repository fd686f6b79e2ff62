"""From a request to a plan: which prompts, what each is, what it touches, what runs together.

Pure analysis: nothing in this package starts a process, reads the clock or writes a file.
``request`` parses what the user asked for, ``prompts`` reads the prompt files,
``footprint`` and ``intent`` analyse them, ``plan`` puts it together, and ``schedule`` is
the policy the runner's loop asks which queued task may start now.
"""
